"""Offline trainer: datasets, losses, configuration, loop, checkpoints and evaluation (never imported at serve time)."""

# The public modules (imported on use, never here: importing the package stays cheap).
__all__ = [
    "benchmark",
    "checkpoint",
    "cli",
    "config",
    "datasets",
    "denoise_cli",
    "denoise_io",
    "denoising",
    "distributed",
    "dsm",
    "evaluate",
    "loop",
    "losses",
    "precision",
    "progress",
]
