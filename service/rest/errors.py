"""API errors: one exception carrying the HTTP status, a stable code, a message a person can act on and headers;
its JSON body ``{"error": code, "message": text, "request_id": id}``, and the app's exception handlers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from mrdserve.models.data.input_errors import InputError, LimitError
from mrdserve.service.log import request_id_var
from mrdserve.service.rest.context import logger


class ApiError(Exception):
    """An error with its HTTP status, a stable code and a message a person can act on."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(error: ApiError) -> JSONResponse:
    """The JSON answer for ``error``, carrying the request id."""
    body = {"error": error.code, "message": error.message, "request_id": request_id_var.get()}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def input_error(error: InputError, path: str = "") -> ApiError:
    """The HTTP error for an input error: 413 beyond a limit, 415 not HDF5, 422 otherwise."""
    status = 413 if isinstance(error, LimitError) else 415 if error.code == "not_hdf5" else 422
    message = str(error).replace(path, "the upload") if path else str(error)
    return ApiError(status, error.code, message)


async def on_api_error(_: Request, error: ApiError) -> JSONResponse:
    return error_response(error)


async def on_validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                         for e in error.errors())
    return error_response(ApiError(422, "invalid_parameter", problems))


async def on_http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    return error_response(ApiError(error.status_code, "http_error", str(error.detail), dict(error.headers or {})))


async def on_internal_error(_: Request, error: Exception) -> JSONResponse:  # a bug of ours, never input
    logger.error("internal_error", exc_info=error, extra={"event": "internal_error"})
    return error_response(ApiError(500, "internal_error", f"internal error ({type(error).__name__}); the "
                                                          f"request id identifies it in the service log"))


EXCEPTION_HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = {
    ApiError: on_api_error, RequestValidationError: on_validation_error, StarletteHTTPException: on_http_error,
    Exception: on_internal_error}
