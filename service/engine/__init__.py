"""The reconstruction engine shared by every entry point: plan (artifact + preparation), batch, run, results."""

# The public modules (imported on use, never here: importing the package stays cheap).
__all__ = [
    "batcher",
    "choice",
    "engine",
    "engine_thread",
    "pipeline",
    "plan",
    "result",
]
