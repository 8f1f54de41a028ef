"""The routes of the verification service: signers, their reference signatures, verify, report, identify,
and the operations routes. Each takes what it needs as a dependency: the running ``Service``, the API key
check for writes, one questioned file per verification."""
from __future__ import annotations

import hmac
from dataclasses import asdict
from functools import cache
from importlib.resources import files
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, Path, Query, Request, Security, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from sigverify.data.errors import DataError, ImageTooLarge, NotAnImage
from sigverify.serving import case_report
from sigverify.serving.app import SIGNER_ID, Service
from sigverify.serving.store import NewReference
from sigverify.serving.verifier import DecodedImage

router = APIRouter()
SignerId = Annotated[str, Path(pattern=SIGNER_ID, description="the signer's identifier")]
ReferenceId = Annotated[int, Path(ge=1, le=2**63 - 1, description="a reference's id (from enrolment)")]
KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="required for writes")


class SignerIn(BaseModel):
    id: str = Field(pattern=SIGNER_ID, description="your identifier for the person (letters, digits, . _ : -)")
    display_name: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f]*$")


def service(request: Request) -> Service:
    return request.app.state.service


Running = Annotated[Service, Depends(service)]


def require_key(svc: Running, key: str | None = Security(KEY_HEADER)) -> None:
    expected = svc.settings.api_key
    if expected is not None and (key is None or not hmac.compare_digest(key.encode(), expected.encode())):
        raise HTTPException(401, "missing or wrong API key (header X-API-Key)")


async def one_questioned_file(request: Request) -> None:
    """A verification scores one image: a request with several ``file`` parts is refused, not cut to one."""
    count = len((await request.form()).getlist("file"))
    if count > 1:
        raise HTTPException(422, f"{count} files in the 'file' field; send one questioned signature per request")


WRITES = [Depends(require_key)]
ONE_FILE = [Depends(one_questioned_file)]


def read_upload(svc: Service, upload: UploadFile) -> DecodedImage:
    """An upload decoded by the verifier's policy, or the 4xx naming it."""
    # Stored and echoed: printable and bounded (PostgreSQL text holds no NUL).
    name = "".join(c for c in (upload.filename or "upload") if c.isprintable())[:255] or "upload"
    try:
        return svc.verifier.read(upload.file.read(), name)
    except DataError as err:
        status = 415 if isinstance(err, NotAnImage) else 413 if isinstance(err, ImageTooLarge) else 422
        raise HTTPException(status, str(err)) from err


def embed_uploads(svc: Service, uploads: list[UploadFile]) -> list[NewReference]:
    """Decode (format sniffed, pixels bounded), preprocess and embed every upload, or fail naming it; a bounded
    number of requests at a time (the rest wait), whatever the server's thread count."""
    with svc.image_work:
        images = [read_upload(svc, upload) for upload in uploads]
        embeddings = svc.verifier.embed(np.stack([image.model_view for image in images]))
    return [NewReference(e, image.sha256, image.name, image.format, image.page.shape[1], image.page.shape[0])
            for e, image in zip(embeddings, images)]


def references_to_score(svc: Service, signer_id: str) -> np.ndarray:
    """The signer's reference embeddings, or 409 when they are too few (or too many) for the model's protocol."""
    references = svc.store.reference_embeddings(signer_id)
    try:
        svc.verifier.check_reference_count(len(references))
    except ValueError as err:
        raise HTTPException(409, f"signer {signer_id!r} has {len(references)} reference signature(s): {err}") from err
    return references


@cache
def page_html() -> str:
    return files("sigverify.serving").joinpath("static/index.html").read_text()


# -- operations ------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page():
    return page_html()


@router.get("/healthz", tags=["operations"], summary="liveness: the process is up and answers")
def healthz():
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"], summary="readiness: the model is loaded and the database answers")
def readyz(svc: Running):
    if svc.database is not None and not svc.database.running:
        return JSONResponse({"status": "embedded database down (being restarted)", "database": "down"},
                            status_code=503, headers={"Retry-After": "5"})
    if not svc.store.ready():
        return JSONResponse({"status": "database unavailable", "database": "unreachable"}, status_code=503,
                            headers={"Retry-After": "5"})
    return {"status": "ready", "model": svc.verifier.model.model_id, "database": "ok",
            "database_restarts": svc.database.restarts if svc.database is not None else None}


@router.get("/model", tags=["operations"], summary="the served model and its decision rule")
def model_info(svc: Running):
    model, config = svc.verifier.model, svc.verifier.model.config
    return {"model_id": model.model_id, "backbone": config.backbone, "embedding_dim": config.embedding_dim,
            "protocol": asdict(config.protocol), "threshold": asdict(config.threshold),
            "min_references": svc.verifier.min_references,
            "limits": {**svc.settings.limits.__dict__, "max_pixels": svc.verifier.max_pixels},
            "auth": svc.settings.api_key is not None}


# -- signers and references ------------------------------------------------------------------------
@router.post("/signers", status_code=201, tags=["signers"], dependencies=WRITES)
def create_signer(signer: SignerIn, svc: Running):
    return svc.store.create_signer(signer.id, signer.display_name)


@router.get("/signers", tags=["signers"])
def list_signers(svc: Running, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9)):
    return svc.store.signers(limit, offset)


@router.get("/signers/{signer_id}", tags=["signers"])
def get_signer(signer_id: SignerId, svc: Running):
    return svc.store.signer(signer_id)


@router.delete("/signers/{signer_id}", status_code=204, tags=["signers"], dependencies=WRITES)
def delete_signer(signer_id: SignerId, svc: Running):
    svc.store.delete_signer(signer_id)


@router.post("/signers/{signer_id}/references", status_code=201, tags=["references"], dependencies=WRITES,
             summary="enrol reference signatures (all or none)")
def add_references(signer_id: SignerId, svc: Running,
                   files: list[UploadFile] = File(..., description="genuine signature images")):
    limits = svc.settings.limits
    if len(files) > limits.max_files:
        raise HTTPException(413, f"{len(files)} files; at most {limits.max_files} per request")
    svc.store.signer(signer_id)  # 404 before the work of embedding
    return svc.store.add_references(signer_id, embed_uploads(svc, files), limits.max_references)


@router.get("/signers/{signer_id}/references", tags=["references"])
def list_references(signer_id: SignerId, svc: Running):
    return svc.store.references(signer_id)


@router.delete("/signers/{signer_id}/references/{reference_id}", status_code=204, tags=["references"],
               dependencies=WRITES)
def delete_reference(signer_id: SignerId, reference_id: ReferenceId, svc: Running):
    svc.store.delete_reference(signer_id, reference_id)


# -- verification ----------------------------------------------------------------------------------
@router.post("/signers/{signer_id}/verify", tags=["verification"], dependencies=ONE_FILE,
             summary="is the questioned signature this signer's?")
def verify(signer_id: SignerId, svc: Running,
           file: UploadFile = File(..., description="the questioned signature image")):
    references = references_to_score(svc, signer_id)
    questioned = embed_uploads(svc, [file])[0]
    model = svc.verifier.model
    return {**svc.verifier.verdict(questioned.embedding, references).to_json(), "signer_id": signer_id,
            "questioned": questioned.describe(), "protocol": svc.verifier.protocol,
            "threshold_source": model.config.threshold.source, "model": model.model_id}


@router.post("/signers/{signer_id}/report", tags=["verification"], dependencies=ONE_FILE,
             response_class=HTMLResponse, summary="a case report of this verification (one HTML file)")
def report(signer_id: SignerId, svc: Running,
           file: UploadFile = File(..., description="the questioned signature image")):
    """The verification of ``verify`` as a self-contained case report: the questioned image, the score among the
    validation scores, the likelihood ratio and its verbal equivalent, the model, the limits. The service keeps
    the references' embeddings, not their images: they are listed by name and SHA-256, without maps."""
    references = references_to_score(svc, signer_id)
    with svc.image_work:
        questioned = read_upload(svc, file)
        embedding = svc.verifier.embed(questioned.model_view[None])[0]
    stored = [DecodedImage(r["filename"] or f"reference {r['id']}", r["image_sha256"], r["image_format"])
              for r in svc.store.references(signer_id)]
    case = case_report.Case(svc.verifier.verdict(embedding, references), questioned, stored, signer_id,
                            maps_note="the service keeps the references as embeddings, not images: explanation "
                                      "maps need the images (sigverify report --reference ... --questioned ...)")
    return HTMLResponse(case_report.render(svc.verifier, case))


@router.post("/identify", tags=["verification"], dependencies=ONE_FILE,
             summary="the enrolled signers closest to a signature")
def identify(svc: Running, file: UploadFile = File(...), k: int = Query(5, ge=1, le=100)):
    questioned = embed_uploads(svc, [file])[0]
    return {"matches": svc.store.nearest_signers(questioned.embedding, k), "questioned": questioned.describe(),
            "model": svc.verifier.model.model_id,
            "note": "cosine similarity to each signer's closest reference (approximate search); a duplicate-"
                    "detection aid, not a verification decision"}
