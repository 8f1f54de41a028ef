"""Verification service under load: ``sigverify serve`` on 127.0.0.1 with 10,000 enrolled signers,
verify latency p50/p95/p99 and requests/s at 1, 4 and 16 concurrent clients, against the same model's
bare onnxruntime time (preprocessing + embedding one image) measured in the same run.

    python -m benchmarks.service --model MODEL_DIR [--signers 10000] [--requests 200] [--seconds 30]

The 10,000 signers' references are random unit vectors loaded straight into the database (3 each);
the verified signer is enrolled through the API with real (synthetic) signature images. Each level is
bounded by ``--requests`` and ``--seconds``. Without ``--db`` an embedded PostgreSQL is started in a
temporary folder.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import bulk_load, emit, latency_percentiles
from sigverify.data.manifest import read_manifest
from sigverify.data.synth import synthesize_dataset
from sigverify.serving.client import wait_ready
from sigverify.serving.embedded import EmbeddedDatabase
from sigverify.serving.store import migrate
from sigverify.serving.verifier import Verifier


def load_signers(dsn: str, n: int, per_signer: int, dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)

    def references():
        for i in range(n):
            vectors = rng.standard_normal((per_signer, dim)).astype(np.float32)
            for j, v in enumerate(vectors / np.linalg.norm(vectors, axis=1, keepdims=True)):
                yield f"load-{i:06d}", v, f"{i:058d}{j:06d}"

    bulk_load(dsn, (f"load-{i:06d}" for i in range(n)), references())


def bare_inference(verifier: Verifier, image: Path, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats + 3):
        start = time.perf_counter()
        verifier.embed(verifier.preprocess_files([image]))
        times.append(time.perf_counter() - start)
    return times[3:]


def load_level(url: str, signer: str, image: bytes, clients: int, requests: int, seconds: float) -> dict:
    latencies, errors, lock = [], 0, threading.Lock()
    deadline = time.monotonic() + seconds
    remaining = [requests]

    def client() -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.monotonic() < deadline:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                start = time.perf_counter()
                response = http.post(f"/signers/{signer}/verify", files={"file": ("q.png", image, "image/png")})
                elapsed = time.perf_counter() - start
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        errors += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for job in [pool.submit(client) for _ in range(clients)]:
            job.result()
    wall = time.perf_counter() - start
    return {"clients": clients, "requests": len(latencies), "errors": errors,
            "requests_per_s": round(len(latencies) / wall, 1), **latency_percentiles(latencies)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an exported model folder (sigverify export)")
    parser.add_argument("--db", help="PostgreSQL DSN (default: an embedded server in a temporary folder)")
    parser.add_argument("--signers", type=int, default=10_000)
    parser.add_argument("--references", type=int, default=3, help="per loaded signer")
    parser.add_argument("--requests", type=int, default=200, help="per concurrency level")
    parser.add_argument("--seconds", type=float, default=30.0, help="per concurrency level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        dsn = args.db or EmbeddedDatabase(Path(tmp) / "db", supervise=False).dsn
        verifier = Verifier(args.model, args.threads)
        dim = verifier.model.config.embedding_dim
        migrate(dsn, verifier.model.model_id, dim)
        started = time.perf_counter()
        load_signers(dsn, args.signers, args.references, dim)
        load_seconds = time.perf_counter() - started
        manifest = synthesize_dataset(Path(tmp) / "synth", signers=1, genuine=6, forgeries=2, seed=1)
        genuine = [record.path for record in read_manifest(manifest) if record.genuine]
        references, questioned = genuine[:4], genuine[-1]

        port = 18000 + os.getpid() % 1000
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "sigverify.cli", "serve", "--model", args.model, "--db", dsn,
                   "--port", str(port), "--api-key", "bench"]
        if args.threads:
            command += ["--threads", str(args.threads)]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(url, server)
            key = {"X-API-Key": "bench"}
            httpx.post(f"{url}/signers", json={"id": "bench-signer"}, headers=key).raise_for_status()
            httpx.post(f"{url}/signers/bench-signer/references", headers=key, timeout=60,
                       files=[("files", (p.name, p.read_bytes(), "image/png")) for p in references]).raise_for_status()
            image = questioned.read_bytes()
            bare = bare_inference(verifier, questioned, 50)
            levels = [load_level(url, "bench-signer", image, c, args.requests, args.seconds) for c in args.clients]
        finally:
            server.terminate()
            server.wait(timeout=60)
    bare_stats = latency_percentiles(bare)
    bare_p50 = bare_stats["p50_ms"]
    single = next((level for level in levels if level["clients"] == 1), levels[0])
    emit({"model": verifier.model.model_id, "backbone": verifier.model.config.backbone,
          "input": [verifier.model.config.preprocess.height, verifier.model.config.preprocess.width], "enrolled_signers": args.signers + 1,
          "stored_vectors": args.signers * args.references + len(references), "load_s": round(load_seconds, 1),
          "bare_inference": bare_stats,
          "levels": levels,
          "overhead_p50": round((single["p50_ms"] - bare_p50) / bare_p50, 3)})


if __name__ == "__main__":
    main()
