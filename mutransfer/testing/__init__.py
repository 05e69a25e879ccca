"""Builders shared by the tests and the benchmarks: recipes (`recipes`), synthetic trials with a known optimum
(`synthetic`), and seeded sweeps written to a store (`seeded_sweeps`)."""
