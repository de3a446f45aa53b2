"""Evaluation runs: config, models under test, the results store, the resumable run, engines, explanations."""
