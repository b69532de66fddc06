"""Offline trainer: datasets, losses, configuration, loop, checkpoints and evaluation (never imported at serve time)."""
