"""The parts of bench.py, the cacheops benchmark: a repository tool, not installed with cacheops."""
