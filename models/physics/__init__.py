"""Operators and their preparation: centred FFTs, SENSE, NUFFT, Toeplitz, density compensation, coil
sensitivities, noise prewhitening, masks, trajectories and the classical reconstructions."""

# The public modules (imported on use, never here: importing the package stays cheap).
__all__ = [
    "cg",
    "classical",
    "compressed_sensing",
    "density",
    "espirit",
    "fft",
    "grappa",
    "masks",
    "noise_level",
    "nufft",
    "prepare_cartesian",
    "prepare_noncartesian",
    "prewhiten",
    "sense",
    "sensitivities",
    "toeplitz",
    "trajectories",
]
