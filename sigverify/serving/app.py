"""The verification service's HTTP application (FastAPI): its settings, its error format and its limits; the
routes themselves are in ``routes.py``.

Writes need the API key (header ``X-API-Key``); reads and verification do not. Uploads are bounded in
bytes and pixels, their format is sniffed from the content, and errors come back as
``{"detail": "..."}`` with a 4xx status, or 503 while the database is away; never a stack trace.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

import sigverify
from sigverify.serving.store import SignatureStore, StoreError
from sigverify.serving.verifier import Verifier

log = logging.getLogger(__name__)

SIGNER_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
SIGNER_ID_RULE = "1-128 ASCII letters, digits and . _ : -, starting with a letter or digit"


@dataclass
class Limits:
    max_upload_bytes: int = 10 * 1024 * 1024  # per request body (the pixels per image are the verifier's bound)
    max_concurrent_images: int = os.cpu_count() or 1  # decodes/embeddings at once: bounds memory and CPU
    max_files: int = 32  # per enrolment request
    max_references: int = 64  # per signer


@dataclass
class Settings:
    api_key: str | None  # None: writes open (only when the operator disabled auth explicitly)
    limits: Limits = field(default_factory=Limits)


@dataclass
class Service:
    """What the routes work with (``app.state.service``): the verifier, the store, the settings, the embedded
    database if the service supervises one, and the bound on images decoded and embedded at once."""

    verifier: Verifier
    store: SignatureStore
    settings: Settings
    database: object | None = None  # embedded.EmbeddedDatabase
    image_work: threading.BoundedSemaphore = field(init=False)

    def __post_init__(self) -> None:
        self.image_work = threading.BoundedSemaphore(self.settings.limits.max_concurrent_images)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is refused with 413, whether it announces
    its length or streams it (it is never read past the limit)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            response = JSONResponse({"detail": f"request body over the {self.limit} byte limit"}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # a streamed body: FastAPI passes an HTTPException through as it is
                    raise HTTPException(413, f"request body over the {self.limit} byte limit")
            return message

        await self.app(scope, limited_receive, send)


def validation_message(err: RequestValidationError) -> str:
    """FastAPI's validation errors as one sentence per problem (the API's errors are ``{"detail": "..."}``),
    with the rule for signer ids spelled out."""
    problems = []
    for error in err.errors():
        where = [str(part) for part in error.get("loc", ()) if part not in ("body", "path", "query")]
        field_name = ".".join(where) or "request"
        if error.get("type") == "string_pattern_mismatch" and where[-1:] in (["id"], ["signer_id"]):
            problems.append(f"signer id {error.get('input')!r} is not valid: use {SIGNER_ID_RULE}")
        else:
            problems.append(f"{field_name}: {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


def create_app(verifier: Verifier, store: SignatureStore, settings: Settings, database=None) -> FastAPI:
    """The API on a verifier and a store; ``database``: the supervised embedded server (``embedded.py``), if
    the service runs one, whose state ``/readyz`` reports."""
    from sigverify.serving.routes import router

    model = verifier.model
    # FastAPIOffline: FastAPI with /docs (Swagger UI) and /redoc served from the package's own files, not a CDN,
    # so the API's documentation renders offline and behind firewalls.
    app = FastAPIOffline(title="sigverify", version=sigverify.__version__,
                         description="Offline signature verification: enrol a signer's reference signatures, verify "
                                     f"a questioned one. Model {model.model_id} ({model.config.backbone}), "
                                     f"{verifier.protocol} protocol, threshold {model.threshold:.4f} "
                                     f"({model.config.threshold.source}).")
    app.state.service = Service(verifier, store, settings, database)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, err: StoreError):
        headers = {"Retry-After": "5"} if err.status == 503 else None
        return JSONResponse({"detail": str(err)}, status_code=err.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        return JSONResponse({"detail": validation_message(err)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)

    app.include_router(router)
    app.add_middleware(BodyLimit, limit=settings.limits.max_upload_bytes)
    return app
