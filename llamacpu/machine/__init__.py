"""The differentiable machine: HybridSWM slot memory, the machine's step (soft, hard and
discrete paths), the symbolic and the neural OEU.
"""
