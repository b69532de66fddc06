"""``GET /v1/models``: the artifacts the engine serves; ``GET /v1/choices``: what a request may ask for."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mrdserve.models.data.baseline import METHODS
from mrdserve.models.physics.posterior_sampling import MAX_POSTERIOR_SAMPLES
from mrdserve.service.engine.choice import CLASSICAL
from mrdserve.service.outputs.formats import FORMAT_NAMES
from mrdserve.service.rest.deps import GUARDED, State

router = APIRouter()


@router.get("/v1/models", dependencies=GUARDED)
async def list_models(state: State) -> dict[str, Any]:
    """The artifacts the engine serves (name, version, task, constraints)."""
    return {"models": state.engine.models()}


@router.get("/v1/choices", dependencies=GUARDED)
async def list_choices(state: State) -> dict[str, Any]:
    """The values of ``artifact``, ``method`` and ``format`` a reconstruction request may name, and the score
    priors behind ``uncertainty`` (at most ``max`` posterior samples per slice, ``mode=async``)."""
    posterior = getattr(state.engine, "posterior", None)
    priors = [posterior.label] if posterior is not None and posterior.available else []  # the one in use
    return {"artifacts": ["auto", CLASSICAL, *sorted({a.name for a in state.engine.artifacts})],
            "methods": list(METHODS), "formats": list(FORMAT_NAMES),
            "uncertainty": {"max": MAX_POSTERIOR_SAMPLES, "priors": priors,
                            "budget_s_per_slice": state.config.uncertainty_budget_s,
                            "budget_s_per_request": state.config.uncertainty_request_budget_s}}
