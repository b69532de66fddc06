"""Reconstruction networks. They take only tensors made by the preparation (models.physics.preparation) and use
only FFTs, convolutions and pointwise ops inside, so every one of them exports to TorchScript and ONNX."""
