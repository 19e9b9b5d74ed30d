"""Hydra entry points and recorded results."""
