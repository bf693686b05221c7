"""Benchmarks users can run: each writes JSON + markdown + PNG under benchmarks/results/."""
