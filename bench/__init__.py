"""Benchmarks: a contract-speaking load generator and the script that runs the scenarios."""
