"""Training infrastructure: train state, steps, loops, checkpoints, metrics."""
