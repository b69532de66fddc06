"""The runtime: artifact registry, runners, the engine, outputs, the REST API, the MRD server and the command line."""

# The public modules (imported on use, never here: importing the package stays cheap).
__all__ = [
    "admission",
    "api",
    "artifacts",
    "bounded_read",
    "cli",
    "config",
    "engine",
    "log",
    "memory",
    "metrics",
    "mrd",
    "offline_recon",
    "openrecon",
    "outputs",
    "pacs",
    "posterior",
    "reader_warmup",
    "registry_cli",
    "rest",
    "runners",
    "serve",
    "slow_clients",
    "spool",
    "stream",
]
