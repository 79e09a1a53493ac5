"""Benchmarks (see the Makefile). A package so that mypy and `python -m bench.<name>` resolve
one bench.common."""
