"""Hydra sweeper `hydra/sweeper=chelation_optuna`: Optuna's TPE through ask-and-tell."""
