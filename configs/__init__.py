"""Experiment configs: each file's `get_config(arg)` describes one experiment (see its docstring);
common.py holds what the paper's configs share."""
