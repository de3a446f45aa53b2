"""Benchmark data: bundled generators and loaders for users' image folders."""
