"""Writers that turn reconstructed magnitude images into files and messages."""

# The public modules (imported on use, never here: importing the package stays cheap).
__all__ = [
    "dicom",
    "dicom_header",
    "formats",
    "geometry",
    "ismrmrd_images",
    "nifti",
    "package",
    "png",
    "presentation",
]
