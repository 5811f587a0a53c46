"""OpenAI-shaped errors: every failure the server reports is ``{"error": {"message", "type", "param", "code"}}``
with one-line messages.

Mapping: ParameterError / ChatInputError / pydantic validation / malformed JSON -> 400
``invalid_request_error``; bad API key -> 401 ``authentication_error``; unknown model -> 404
``model_not_found``; waiting queue full -> 503 ``service_unavailable``. Anything else is a server bug and is
logged with its traceback and answered 500 with a one-line message (the fuzz tests assert it never happens).
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from v4stack.config.validation import ParameterError
from v4stack.engine.llm_engine import EngineFullError

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 300  # error messages stay one readable line even for huge inputs


class APIError(Exception):
    """An error with its HTTP status and OpenAI fields."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        message = " ".join(self.message.split())[:MAX_MESSAGE_CHARS]
        return {"error": {"message": message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(HTTPStatus.BAD_REQUEST, message, param=param, code=code)


def from_exception(exc: Exception) -> APIError:
    """The APIError for an exception raised while handling a request."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ParameterError):
        return bad_request(str(exc), param=exc.param)
    if isinstance(exc, EngineFullError):
        return APIError(HTTPStatus.SERVICE_UNAVAILABLE, str(exc), "service_unavailable", code="queue_full")
    log.error("request failed", exc_info=exc)
    return APIError(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}", "server_error")


def _validation_param(error: dict) -> str | None:
    loc = [str(p) for p in error.get("loc", ()) if p != "body"]
    return ".".join(loc) or None


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        param = _validation_param(first)
        if first.get("type") == "json_invalid":
            return bad_request(f"the request body is not valid JSON ({first.get('msg', '')})").response()
        text = f"{param}: {first.get('msg', 'invalid value')}" if param else first.get("msg", "invalid request")
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        return bad_request(text + more, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == HTTPStatus.NOT_FOUND else "invalid_request_error"
        return APIError(exc.status_code, str(exc.detail), kind).response()

    @app.exception_handler(ParameterError)
    async def _parameter(_: Request, exc: ParameterError) -> JSONResponse:
        return from_exception(exc).response()

    @app.exception_handler(EngineFullError)
    async def _full(_: Request, exc: EngineFullError) -> JSONResponse:
        return from_exception(exc).response()

    @app.exception_handler(Exception)
    async def _other(_: Request, exc: Exception) -> JSONResponse:
        return from_exception(exc).response()
