"""Reusable pieces of benchmarks/bandwidth.py: clips, anchors, fvcall runs, metrics, BD-rate, reports."""
