"""Whole-model checks: the gradient check, the randomisation sanity check, the deployed model's audit."""
