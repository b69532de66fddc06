"""``GET /v1/models``: the artifacts the engine serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mrdserve.service.rest.deps import GUARDED, State

router = APIRouter()


@router.get("/v1/models", dependencies=GUARDED)
async def list_models(state: State) -> dict[str, Any]:
    """The artifacts the engine serves (name, version, task, constraints)."""
    return {"models": state.engine.models()}
