"""Reconstruction networks. They take only tensors made by the preparation (models.physics.preparation) and use
only FFTs, convolutions and pointwise ops inside, so every one of them exports to TorchScript and ONNX."""

# The public modules (imported on use, never here: importing the package stays cheap).
__all__ = [
    "anderson",
    "baselines",
    "complex",
    "deq",
    "invertible",
    "irim",
    "mwcnn",
    "ncpdnet",
    "padding",
    "pdnet",
    "registry",
    "rim",
    "sensitivity_refiner",
    "unet",
    "xpdnet",
]
