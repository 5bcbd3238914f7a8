"""The ASGI app: the three APIs' routes, the guard (key, body cap), CORS, and errors in each API's shape."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app import __version__
from app.core.errors import CamelidError
from app.core.server.http import DEFAULT_MAX_BODY, Guard, api_of, describe, error_body, status_of
from app.core.server.service import ModelService, QueueFullError

_log = logging.getLogger(__name__)


def create_app(service: ModelService, *, api_key: str | None = None, cors: tuple[str, ...] = (),
               max_body: int = DEFAULT_MAX_BODY) -> Any:
    """The app for uvicorn: routes on `service`, wrapped in the guard (and CORS when origins are given)."""
    from app.core.server import anthropic_api, ollama_api, openai_api

    api = FastAPI(title="Camelid", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    api.state.service = service
    api.include_router(openai_api.router)
    api.include_router(anthropic_api.router)
    api.include_router(ollama_api.router)

    @api.get("/")
    async def root() -> Any:
        # A plain answer for health probes (Ollama answers "/" the same way).
        from fastapi.responses import PlainTextResponse

        return PlainTextResponse("Camelid is running")

    @api.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, **service.status()}

    @api.exception_handler(CamelidError)
    async def camelid_error(request: Request, exc: CamelidError) -> JSONResponse:
        status = status_of(exc)
        headers = {"retry-after": str(exc.retry_after)} if isinstance(exc, QueueFullError) else None
        return JSONResponse(error_body(api_of(request.url.path), status, describe(exc), exc.code), status,
                            headers=headers)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(api_of(request.url.path), 400, validation_sentence(exc),
                                       "invalid_request"), 400)

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        words = {404: f"There is no {request.method} {request.url.path} here.",
                 405: f"{request.url.path} does not take {request.method}.",
                 408: "The request body did not arrive in time.",
                 413: "The request body is larger than this server accepts."}
        message = words.get(exc.status_code, str(exc.detail))
        return JSONResponse(error_body(api_of(request.url.path), exc.status_code, message), exc.status_code)

    @api.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("server request failed: %s %s", request.method, request.url.path)
        return JSONResponse(error_body(api_of(request.url.path), 500, describe(exc)), 500)

    app: Any = api
    if cors:
        from starlette.middleware.cors import CORSMiddleware

        app = CORSMiddleware(app, allow_origins=list(cors), allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                             allow_headers=["authorization", "content-type", "x-api-key",
                                            "anthropic-version", "openai-organization"])
    return Guard(app, api_key=api_key, max_body=max_body)


def validation_sentence(exc: RequestValidationError) -> str:
    """pydantic's errors as one sentence: which fields, what is wrong."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return "The request body is not valid JSON."
    parts = []
    for error in errors[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "the body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = len(errors) - 3
    tail = f" (and {more} more)" if more > 0 else ""
    return "The request is not valid: " + "; ".join(parts) + tail + "."
