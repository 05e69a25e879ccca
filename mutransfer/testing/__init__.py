"""Builders shared by the tests and the benchmarks: synthetic sweeps with a known optimum."""
