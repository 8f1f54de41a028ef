"""The verification service's HTTP API (FastAPI): signers, reference signatures, verify, identify.

Writes need the API key (header ``X-API-Key``); reads and verification do not. Uploads are bounded in
bytes and pixels, their format is sniffed from the content, and errors come back as
``{"detail": "..."}`` with a 4xx status, or 503 while the database is away; never a stack trace.
"""
from __future__ import annotations

import hmac
import logging
import os
import threading
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Path, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field

import sigverify
from sigverify.data.errors import DataError, ImageTooLarge, NotAnImage
from sigverify.serving import case_report
from sigverify.serving.store import NewReference, SignatureStore, StoreError
from sigverify.serving.verifier import DecodedImage, Verifier

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


SignerId = Annotated[str, Path(pattern=SIGNER_ID, description="the signer's identifier")]
ReferenceId = Annotated[int, Path(ge=1, le=2**63 - 1, description="a reference's id (from enrolment)")]


class SignerIn(BaseModel):
    id: str = Field(pattern=SIGNER_ID, description="your identifier for the person (letters, digits, . _ : -)")
    display_name: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f]*$")


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


async def one_questioned_file(request: Request) -> None:
    """A verification scores one image: a request with several ``file`` parts is refused, not cut to one."""
    count = len((await request.form()).getlist("file"))
    if count > 1:
        raise HTTPException(422, f"{count} files in the 'file' field; send one questioned signature per request")


def create_app(verifier: Verifier, store: SignatureStore, settings: Settings, database=None) -> FastAPI:
    """The API on a verifier and a store; ``database``: the supervised embedded server (``embedded.py``), if
    the service runs one, whose state ``/readyz`` reports."""
    model = verifier.model
    # FastAPIOffline: FastAPI with /docs (Swagger UI) and /redoc served from the package's own files, not a CDN,
    # so the API's documentation renders offline and behind firewalls.
    app = FastAPIOffline(title="sigverify", version=sigverify.__version__,
                  description="Offline signature verification: enrol a signer's reference signatures, verify a "
                              f"questioned one. Model {model.model_id} ({model.config['backbone']}), "
                              f"{verifier.protocol} protocol, threshold {model.threshold:.4f} "
                              f"({model.config['threshold']['source']}).")
    limits = settings.limits
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required for writes")

    def require_key(key: str | None = Security(key_header)) -> None:
        if settings.api_key is None:
            return
        if key is None or not hmac.compare_digest(key.encode(), settings.api_key.encode()):
            raise HTTPException(401, "missing or wrong API key (header X-API-Key)")

    writes = [Depends(require_key)]

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

    image_work = threading.BoundedSemaphore(limits.max_concurrent_images)

    def embed_uploads(uploads: list[UploadFile]) -> list[NewReference]:
        """Decode (format sniffed, pixels bounded), preprocess and embed every upload, or fail naming it;
        a bounded number of requests at a time (the rest wait), whatever the server's thread count."""
        with image_work:
            return _embed_uploads(uploads)

    def _embed_uploads(uploads: list[UploadFile]) -> list[NewReference]:
        images = [read_upload(upload) for upload in uploads]
        embeddings = verifier.embed(np.stack([image.model_view for image in images]))
        return [NewReference(e, image.sha256, image.name, image.format, image.page.shape[1], image.page.shape[0])
                for e, image in zip(embeddings, images)]

    def read_upload(upload: UploadFile) -> DecodedImage:
        """An upload decoded by the verifier's policy, or the 4xx naming it."""
        # Stored and echoed: printable and bounded (PostgreSQL text holds no NUL).
        name = "".join(c for c in (upload.filename or "upload") if c.isprintable())[:255] or "upload"
        try:
            return verifier.read(upload.file.read(), name)
        except DataError as err:
            status = 415 if isinstance(err, NotAnImage) else 413 if isinstance(err, ImageTooLarge) else 422
            raise HTTPException(status, str(err)) from err

    page_html = files("sigverify.serving").joinpath("static/index.html").read_text()  # read once, not per request

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return page_html

    @app.get("/healthz", tags=["operations"], summary="liveness: the process is up and answers")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="readiness: the model is loaded and the database answers")
    def readyz():
        if database is not None and not database.running:
            return JSONResponse({"status": "embedded database down (being restarted)", "database": "down"},
                                status_code=503, headers={"Retry-After": "5"})
        if not store.ready():
            return JSONResponse({"status": "database unavailable", "database": "unreachable"}, status_code=503,
                                headers={"Retry-After": "5"})
        return {"status": "ready", "model": model.model_id, "database": "ok",
                "database_restarts": database.restarts if database is not None else None}

    @app.get("/model", tags=["operations"], summary="the served model and its decision rule")
    def model_info():
        config = model.config
        return {"model_id": model.model_id, "backbone": config["backbone"], "embedding_dim": config["embedding_dim"],
                "protocol": config["protocol"], "threshold": config["threshold"],
                "min_references": verifier.min_references,
                "limits": {**limits.__dict__, "max_pixels": verifier.max_pixels},
                "auth": settings.api_key is not None}

    @app.post("/signers", status_code=201, tags=["signers"], dependencies=writes)
    def create_signer(signer: SignerIn):
        return store.create_signer(signer.id, signer.display_name)

    @app.get("/signers", tags=["signers"])
    def list_signers(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9)):
        return store.signers(limit, offset)

    @app.get("/signers/{signer_id}", tags=["signers"])
    def get_signer(signer_id: SignerId):
        return store.signer(signer_id)

    @app.delete("/signers/{signer_id}", status_code=204, tags=["signers"], dependencies=writes)
    def delete_signer(signer_id: SignerId):
        store.delete_signer(signer_id)

    @app.post("/signers/{signer_id}/references", status_code=201, tags=["references"], dependencies=writes,
              summary="enrol reference signatures (all or none)")
    def add_references(signer_id: SignerId, files: list[UploadFile] = File(..., description="genuine signature images")):
        if len(files) > limits.max_files:
            raise HTTPException(413, f"{len(files)} files; at most {limits.max_files} per request")
        store.signer(signer_id)  # 404 before the work of embedding
        return store.add_references(signer_id, embed_uploads(files), limits.max_references)

    @app.get("/signers/{signer_id}/references", tags=["references"])
    def list_references(signer_id: SignerId):
        return store.references(signer_id)

    @app.delete("/signers/{signer_id}/references/{reference_id}", status_code=204, tags=["references"],
                dependencies=writes)
    def delete_reference(signer_id: SignerId, reference_id: ReferenceId):
        store.delete_reference(signer_id, reference_id)

    @app.post("/signers/{signer_id}/verify", tags=["verification"], dependencies=[Depends(one_questioned_file)],
              summary="is the questioned signature this signer's?")
    def verify(signer_id: SignerId, file: UploadFile = File(..., description="the questioned signature image")):
        references = store.reference_embeddings(signer_id)
        try:
            verifier.check_reference_count(len(references))
        except ValueError as err:
            raise HTTPException(409, f"signer {signer_id!r} has {len(references)} reference signature(s): {err}") from err
        questioned = embed_uploads([file])[0]
        verdict = verifier.verdict(questioned.embedding, references)
        return {**verdict.to_json(), "signer_id": signer_id, "questioned": questioned.describe(),
                "protocol": verifier.protocol, "threshold_source": model.config["threshold"]["source"],
                "model": model.model_id}

    @app.post("/signers/{signer_id}/report", tags=["verification"], dependencies=[Depends(one_questioned_file)],
              response_class=HTMLResponse, summary="a case report of this verification (one HTML file)")
    def report(signer_id: SignerId, file: UploadFile = File(..., description="the questioned signature image")):
        """The verification of ``verify`` as a self-contained case report: the questioned image, the score among
        the validation scores, the likelihood ratio and its verbal equivalent, the model, the limits. The service
        keeps the references' embeddings, not their images: they are listed by name and SHA-256, without maps."""
        references = store.reference_embeddings(signer_id)
        try:
            verifier.check_reference_count(len(references))
        except ValueError as err:
            raise HTTPException(409, f"signer {signer_id!r} has {len(references)} reference signature(s): {err}") from err
        with image_work:
            questioned = read_upload(file)
            embedding = verifier.embed(questioned.model_view[None])[0]
        stored = [DecodedImage(r["filename"] or f"reference {r['id']}", r["image_sha256"], r["image_format"])
                  for r in store.references(signer_id)]
        case = case_report.Case(verifier.verdict(embedding, references), questioned, stored, signer_id,
                                maps_note="the service keeps the references as embeddings, not images: explanation "
                                          "maps need the images (sigverify report --reference ... --questioned ...)")
        return HTMLResponse(case_report.render(verifier, case))

    @app.post("/identify", tags=["verification"], dependencies=[Depends(one_questioned_file)],
              summary="the enrolled signers closest to a signature")
    def identify(file: UploadFile = File(...), k: int = Query(5, ge=1, le=100)):
        questioned = embed_uploads([file])[0]
        return {"matches": store.nearest_signers(questioned.embedding, k), "questioned": questioned.describe(),
                "model": model.model_id,
                "note": "cosine similarity to each signer's closest reference (approximate search); a duplicate-"
                        "detection aid, not a verification decision"}

    app.add_middleware(BodyLimit, limit=limits.max_upload_bytes)
    return app

