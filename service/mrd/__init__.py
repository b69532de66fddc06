"""The MRD streaming server (Gadgetron's port 9002 protocol) over the shared engine."""

# The public modules (imported on use, never here: importing the package stays cheap).
__all__ = [
    "client",
    "configs",
    "protocol",
    "server",
    "session",
]
