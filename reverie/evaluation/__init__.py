"""Benchmarks as published and the student's evaluation on them."""
