"""Operators and their preparation: the linear-operator protocol, centred FFTs, the export-safe kernels, SENSE,
NUFFT, Toeplitz, density compensation, coil sensitivities, noise prewhitening, masks, trajectories and the
classical reconstructions."""

# The public modules (imported on use, never here: importing the package stays cheap).
__all__ = [
    "cg",
    "classical",
    "compressed_sensing",
    "density",
    "espirit",
    "external_linear_map",
    "fft",
    "grappa",
    "kernels",
    "linop",
    "masks",
    "noise_level",
    "nufft",
    "nufft_backends",
    "nufft_cache",
    "posterior_sampling",
    "prepare_cartesian",
    "prepare_noncartesian",
    "prewhiten",
    "sense",
    "sensitivities",
    "toeplitz",
    "trajectories",
]
