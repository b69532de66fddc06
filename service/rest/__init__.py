"""The REST API in parts: the app state and its dependencies, the routers, the job runner and the lifespan;
``service.api.create_app`` assembles them into one FastAPI app."""

# The public modules (imported on use, never here: importing the package stays cheap).
__all__ = [
    "catalog",
    "context",
    "deps",
    "docs",
    "errors",
    "health",
    "job_runner",
    "jobs",
    "lifecycle",
    "processing",
    "reconstructions",
    "state",
    "upload",
    "web",
]
