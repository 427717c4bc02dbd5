"""The symbolic core: instruction set, assembler, program graph, expert programs and the
reference interpreter. Plain Python integers; nothing here imports torch.
"""
