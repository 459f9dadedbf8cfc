"""Benchmarks of fvcall: scripts (python benchmarks/NAME.py) and the harness they share."""
