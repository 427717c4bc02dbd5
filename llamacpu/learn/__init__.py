"""Learning: tasks, the curriculum, the learned machine, the trainer, checkpoints and
data-parallel training.
"""
