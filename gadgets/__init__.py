"""The Gadgetron adapter: the external Python gadget (``<execute>`` and ``<connect>``), chain XMLs in ``config/``."""

# The public modules (imported on use, never here: importing the package stays cheap).
__all__ = [
    "connection",
    "gadgetron_host",
    "launcher_guard",
    "listen",
    "recon_data",
    "reconstruct",
    "settings",
]
