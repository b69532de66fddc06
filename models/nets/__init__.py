"""Reconstruction networks. They take only tensors made by the preparation (models.data.prepare) and use
only FFTs, convolutions and pointwise ops inside, so every one of them exports to TorchScript and ONNX."""

# The public modules (imported on use, never here: importing the package stays cheap).
__all__ = [
    "anderson",
    "baselines",
    "broyden",
    "cascade",
    "complex",
    "conv_stack",
    "data_consistency",
    "deq",
    "invertible",
    "irim",
    "kiki",
    "learnlets",
    "mwcnn",
    "ncpdnet",
    "padding",
    "pdnet",
    "registry",
    "rim",
    "score",
    "sensitivity_refiner",
    "unet",
    "xpdnet",
]
