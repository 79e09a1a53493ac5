"""Benchmarks: each module runs as a script (python bench/<name>.py) or with python -m."""
