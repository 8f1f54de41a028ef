"""The identify query on a large store: the service's own nearest-signer SQL (``SignatureStore.
nearest_signers``: the nearest signer centroids through pgvector's HNSW cosine index, then every reference of
those candidates compared exactly) over N stored 256-d vectors.

    python -m benchmarks.identify [--vectors 1000000] [--queries 300] [--k 5] [--candidates 10 20 50] [--db DSN]

Each signer has 10 vectors scattered around a centre of their own (about 0.8 cosine between two of them,
as between two genuine signatures of one writer in a trained model); a query is a new draw around a stored
signer's centre, so recall@1 against that signer is reported beside the latency, for each number of
candidate signers (the recall/latency curve; the first is the headline). The centroids and their index are
built after loading, as a bulk load should (the build time is reported). Without ``--db`` an embedded
PostgreSQL is started in a temporary folder (``--data-dir`` to keep it), with ``shared_buffers`` large
enough for the table (``--shared-buffers-mb``).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

from benchmarks.common import bulk_load, emit, latency_percentiles
from sigverify.serving.embedded import EmbeddedDatabase
from sigverify.serving.store import (
    ALL_CENTROIDS,
    CENTROID_GRAPH,
    CENTROID_INDEX,
    DEFAULT_CANDIDATES,
    DEFAULT_SEARCH_BREADTH,
    SignatureStore,
    migrate,
)

PER_SIGNER = 10


BLOCK = 50_000  # vectors generated and loaded together: BLOCK // PER_SIGNER signers
SPREAD = 0.03  # per-coordinate noise around a signer's centre: about 0.8 cosine between two of their references


def centres(block: int, dim: int) -> np.ndarray:
    """Unit centres of the signers of one block (a signer's references cluster around it, as trained
    embeddings of one writer do; uniform random vectors, with no such structure, are a worst case for HNSW)."""
    out = np.random.default_rng(block).standard_normal((BLOCK // PER_SIGNER, dim)).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def around(centre: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    out = centre + rng.standard_normal((n, len(centre))).astype(np.float32) * SPREAD
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def vectors(block: int, count: int, dim: int) -> np.ndarray:
    """The stored vectors of one block, the same on every call."""
    rng = np.random.default_rng(10**6 + block)
    return np.concatenate([around(c, rng, PER_SIGNER) for c in centres(block, dim)])[:count]


def load(dsn: str, n: int, dim: int) -> float:
    started = time.perf_counter()
    signers = (f"s{s:07d}" for s in range((n + PER_SIGNER - 1) // PER_SIGNER))
    references = ((f"s{i // PER_SIGNER:07d}", v, f"{i:064d}") for start in range(0, n, BLOCK)
                  for i, v in enumerate(vectors(start // BLOCK, min(BLOCK, n - start), dim), start))
    bulk_load(dsn, signers, references, centroids=False)  # build_index computes them, timed with the index
    return time.perf_counter() - started


def build_index(dsn: str, workers: int, m: int, ef_construction: int) -> float:
    """Every signer's centroid from their references, then the centroids' HNSW index: what enrolments keep up
    to date one signer at a time, done at once after a bulk load."""
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '2GB'")
        conn.execute(f"SET max_parallel_maintenance_workers = {int(workers)}")
        conn.execute(ALL_CENTROIDS)
        conn.execute(sql.SQL(CENTROID_INDEX).format(m=sql.Literal(int(m)), ef_construction=sql.Literal(int(ef_construction))))
        conn.execute("ANALYZE signers")
        conn.execute("ANALYZE signature_references")
    return time.perf_counter() - started


def timed_queries(store: SignatureStore, queries, order, k: int, candidates: int, breadth: int, warmup: int) -> dict:
    latencies, hits = [], 0
    for i, index in enumerate(order):
        query, signer = queries[index]
        start = time.perf_counter()
        matches = store.nearest_signers(query, k, candidates, breadth)
        elapsed = time.perf_counter() - start
        if i >= warmup:  # the first queries bring the table's pages into PostgreSQL's buffers
            latencies.append(elapsed)
            hits += bool(matches) and matches[0]["signer_id"] == signer
    return {"candidates": candidates, "breadth": breadth, "queries": len(latencies), **latency_percentiles(latencies),
            "recall_at_1": round(hits / len(latencies), 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=300,
                        help="untimed queries first: a running service's index is in memory (no pg_prewarm here)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--candidates", type=int, nargs="+", default=list(dict.fromkeys([DEFAULT_CANDIDATES, 20, 50])),
                        help="candidate signers compared exactly, one curve point each (default: the service's first)")
    parser.add_argument("--breadth", type=int, nargs="+", default=[DEFAULT_SEARCH_BREADTH],
                        help="HNSW search breadths (hnsw.ef_search), crossed with --candidates for the curve")
    parser.add_argument("--m", type=int, default=CENTROID_GRAPH["m"], help="HNSW graph degree (the store's)")
    parser.add_argument("--ef-construction", type=int, default=CENTROID_GRAPH["ef_construction"],
                        help="HNSW build candidates (the store's)")
    parser.add_argument("--reindex", action="store_true", help="rebuild a kept database's index (with --m, --ef-construction)")
    parser.add_argument("--db", help="PostgreSQL DSN (default: embedded, in --data-dir)")
    parser.add_argument("--data-dir", help="keep the embedded database here (default: a temporary folder)")
    parser.add_argument("--index-workers", type=int, default=2)
    parser.add_argument("--shared-buffers-mb", type=int, default=3072,
                        help="the embedded server's shared_buffers (1M x 256-d: ~2 GB of index and table)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        if args.db:
            dsn = args.db
        else:  # the embedded server, with the index's working set in PostgreSQL's own buffers
            database = EmbeddedDatabase(args.data_dir or Path(tmp) / "db", supervise=False)
            dsn = database.dsn
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f"ALTER SYSTEM SET shared_buffers = '{int(args.shared_buffers_mb)}MB'")
            database.server.stop()
            database.server.start()
        migrate(dsn, f"benchmark-{args.dim}", args.dim)
        with psycopg.connect(dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM signature_references").fetchone()[0]
        load_s = index_s = None
        if stored == args.vectors and args.reindex:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("DROP INDEX IF EXISTS signers_centroid")
            index_s = build_index(dsn, args.index_workers, args.m, args.ef_construction)
        if stored != args.vectors:  # a kept --data-dir with the right count is reused
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE signers CASCADE")
                conn.execute("DROP INDEX IF EXISTS signers_centroid")  # built once, after the load
            load_s = load(dsn, args.vectors, args.dim)
            index_s = build_index(dsn, args.index_workers, args.m, args.ef_construction)
        store = SignatureStore(dsn, f"benchmark-{args.dim}", args.dim)
        rng = np.random.default_rng(12345)
        n_signers = args.vectors // PER_SIGNER
        queries = []  # a new signature of a stored signer: another draw around their centre
        for signer in np.sort(rng.integers(0, n_signers, args.queries + args.warmup)):
            centre = centres(signer * PER_SIGNER // BLOCK, args.dim)[signer % (BLOCK // PER_SIGNER)]
            queries.append((around(centre, rng, 1)[0], f"s{signer:07d}"))
        order = rng.permutation(len(queries))
        curve = [timed_queries(store, queries, order, args.k, c, b, args.warmup)
                 for b in args.breadth for c in args.candidates]
        store.close()
    emit({"vectors": args.vectors, "dim": args.dim, "k": args.k, "warmup": args.warmup, "m": args.m,
          "ef_construction": args.ef_construction,
          "load_s": None if load_s is None else round(load_s, 1),
          "index_build_s": None if index_s is None else round(index_s, 1),
          **curve[0], "curve": curve})


if __name__ == "__main__":
    main()
