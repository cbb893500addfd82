"""Benchmarks of the offline preview and the test suite (`make bench`); not part of `make test`."""
