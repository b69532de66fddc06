"""The reconstruction science, usable offline without any server: physics, data, networks, training, export."""

# The public modules (imported on use, never here: importing the package stays cheap).
__all__ = [
    "data",
    "export",
    "nets",
    "physics",
    "training",
]
