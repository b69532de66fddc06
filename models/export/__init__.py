"""Artifact export: TorchScript + ONNX + manifest from a trained checkpoint, with equivalence verification.

Import the submodules directly (``mrdserve.models.export.export``, ``...verify``): this package module imports
nothing, so that ``verify`` loads artifacts without importing the network classes.
"""

# The public modules (imported on use, never here: importing the package stays cheap).
__all__ = [
    "cli",
    "envelope",
    "export",
    "score_prior",
    "verify",
]
