"""The routes' dependencies: the service state and job runner from ``app.state``, the API key, and the check
that refuses query parameters a route does not take."""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from mrdserve.service.rest.errors import ApiError
from mrdserve.service.rest.job_runner import JobRunner
from mrdserve.service.rest.state import ServiceState


def service_state(request: Request) -> ServiceState:
    """The app's ``ServiceState`` (``app.state.service``, set by ``create_app``)."""
    return request.app.state.service


def job_runner(request: Request) -> JobRunner:
    """The app's ``JobRunner`` (``app.state.jobs``, set by ``create_app``)."""
    return request.app.state.jobs


State = Annotated[ServiceState, Depends(service_state)]
Jobs = Annotated[JobRunner, Depends(job_runner)]


async def require_api_key(request: Request) -> None:
    """401 unless a configured API key is sent (``X-API-Key`` or ``Authorization: Bearer``); open when none is."""
    keys = service_state(request).config.api_keys
    if not keys:
        return
    given = request.headers.get("x-api-key")
    authorization = request.headers.get("authorization", "")
    if given is None and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    if given is None or not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
        raise ApiError(401, "unauthorized", "a valid API key is required: send it as header X-API-Key or "
                                            "Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})


def only_query(*names: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency refusing (422) query parameters other than ``names``, and any given twice."""
    allowed = set(names)

    async def check(request: Request) -> None:
        counts = Counter(key for key, _ in request.query_params.multi_items())
        unknown = sorted({key[:50] for key in counts if key not in allowed})
        if unknown:
            known = (f"; this endpoint takes {', '.join(sorted(allowed))}" if allowed
                     else "; this endpoint takes no query parameters")
            raise ApiError(422, "unknown_parameter", f"unknown query parameter(s): {', '.join(unknown)}{known}")
        repeated = sorted(key for key, count in counts.items() if count > 1)
        if repeated:
            raise ApiError(422, "repeated_parameter", f"query parameter(s) given more than once: "
                                                      f"{', '.join(repeated)}")

    return check


NO_QUERY = only_query()
GUARDED = [Depends(require_api_key), Depends(NO_QUERY)]  # the /v1 read endpoints: a key, no query parameters
