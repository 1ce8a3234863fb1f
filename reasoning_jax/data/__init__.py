"""Data: synthetic tasks, dataset loaders, pipelines and tokenizers (host side)."""
