"""Benchmarks that compare rucai with reference implementations, one command each."""
