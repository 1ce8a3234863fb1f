"""Evaluation: pass@k, maj@k and the eval loop."""
