"""Experiments built from the framework's configs: the co-finetuning study (study.py)."""
