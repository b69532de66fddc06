"""Artifact export: TorchScript + ONNX + manifest from a trained checkpoint, with equivalence verification.

Import the submodules directly (``models.export.export``, ``models.export.verify``): this package module
stays empty so that ``models.export.verify`` loads artifacts without importing the network classes.
"""
