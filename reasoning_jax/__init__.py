"""reasoning_jax: JAX-native RL post-training for reasoning language models."""
__version__ = "0.1.0"
