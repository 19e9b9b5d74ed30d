"""Hydra sweeper `hydra/sweeper=chelation_grid` (the default): Hydra's grid, each job composed
once."""
