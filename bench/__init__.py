"""Benchmarks of pymodaq_plugins_pyrpl; ``python -m bench`` runs them all (see docs/performance.md)."""
