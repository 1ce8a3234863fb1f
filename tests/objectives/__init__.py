"""Tests of reasoning_jax.objectives."""
