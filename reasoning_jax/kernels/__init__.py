"""Kernels from kernel libraries, behind the model's named seams (`model.attention`).

Nothing here imports `reasoning_jax.model`: the seam passes arrays and static values.
"""
