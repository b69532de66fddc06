"""Readers and writers (ISMRMRD, fastMRI), synthetic phantoms and the simulator, metrics, the classical baseline,
the sample-level preparation shared by training and serving, and the artifact manifest schema."""

# The public modules (imported on use, never here: importing the package stays cheap).
__all__ = [
    "acquisitions",
    "baseline",
    "coils",
    "envelope",
    "fastmri",
    "hostile",
    "input_errors",
    "ismrmrd_header",
    "ismrmrd_inspect",
    "ismrmrd_io",
    "ismrmrd_write",
    "manifest",
    "manifest_schema",
    "metrics",
    "phantoms",
    "prepare",
    "sample",
    "score_prior_artifact",
    "simulate",
    "spatial",
    "trajectory_units",
]
