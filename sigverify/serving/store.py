"""Enrolled signers and their reference embeddings, in PostgreSQL with pgvector.

- The schema is created and migrated at start (``MIGRATIONS``, applied in order under an advisory lock,
  recorded in ``schema_migrations``), so several service processes may start together.
- Every statement is parameterised; identifiers never come from requests.
- A database holds the embeddings of one model: vectors of another network are not comparable, so
  opening it with another model is refused (``model_info``).
- Enrolment is one transaction: a request whose images are not all usable writes nothing.
- Nearest-signer search (``identify``) runs on an HNSW index over each signer's centroid (the mean of their
  reference embeddings, kept up to date by every enrolment and deletion), then compares the query exactly with
  every reference of the closest signers: an index ten times smaller than one over every reference, and an
  exact answer among the candidates.
- A database that goes away makes calls fail with :class:`StoreUnavailable`; the pool reconnects by
  itself once it is back.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

_LOCK_ID = 0x5167_5EF1  # pg_advisory_xact_lock key of the migrations
DEFAULT_CANDIDATES = 10  # signers whose references identify compares exactly (docs/benchmarks.md: the curve)
# How widely the HNSW search looks for them (hnsw.ef_search), and the graph it searches: centroids are spread
# like random directions, the hard case for a graph search, so the graph is denser than pgvector's default
# (m 16, ef_construction 64). On 1,000,000 vectors: recall@1 0.99 at p95 8.3 ms (docs/benchmarks.md).
DEFAULT_SEARCH_BREADTH = 30
# Migration 2 builds it. It got these parameters (cfea81e) before any release held migration 2 without them
# (284aff3, two hours earlier in the same session, so the same stop), so no database was built with the sparser graph;
# another graph needs a new migration.
CENTROID_GRAPH = {"m": 32, "ef_construction": 128}

# Every signer's centroid from their references at once (migration 2; a benchmark after a bulk load), and the
# centroids' graph ({m}, {ef_construction}: CENTROID_GRAPH's).
ALL_CENTROIDS = ("UPDATE signers s SET centroid = a.centroid FROM (SELECT signer_id, avg(embedding) AS centroid "
                 "FROM signature_references GROUP BY signer_id) a WHERE s.id = a.signer_id")
CENTROID_INDEX = ("CREATE INDEX signers_centroid ON signers USING hnsw (centroid vector_cosine_ops) "
                  "WITH (m = {m}, ef_construction = {ef_construction})")

# version -> statements; {dim} is the model's embedding size, {m} and {ef_construction} the centroid graph's
# (ints, formatted with sql.Literal).
MIGRATIONS: list[tuple[int, str]] = [
    (1, """
        CREATE TABLE model_info (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            model_id text NOT NULL,
            embedding_dim integer NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now());
        CREATE TABLE signers (
            id text PRIMARY KEY,
            display_name text,
            created_at timestamptz NOT NULL DEFAULT now());
        CREATE TABLE signature_references (
            id bigserial PRIMARY KEY,
            signer_id text NOT NULL REFERENCES signers (id) ON DELETE CASCADE,
            embedding vector({dim}) NOT NULL,
            image_sha256 text NOT NULL,
            filename text,
            image_format text,
            width integer,
            height integer,
            created_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (signer_id, image_sha256));
        CREATE INDEX signature_references_signer ON signature_references (signer_id);
        CREATE INDEX signature_references_embedding ON signature_references
            USING hnsw (embedding vector_cosine_ops);
    """),
    (2, f"""
        ALTER TABLE signers ADD COLUMN centroid vector({{dim}});
        {ALL_CENTROIDS};
        {CENTROID_INDEX};
        DROP INDEX signature_references_embedding;
    """),
]

# A signer's centroid after their references changed (cosine distance ignores its length: no normalising).
_UPDATE_CENTROID = ("UPDATE signers SET centroid = (SELECT avg(embedding) FROM signature_references "
                    "WHERE signer_id = %(id)s) WHERE id = %(id)s")


class StoreError(Exception):
    """A request the store refuses; ``status`` is the HTTP status it maps to."""

    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class StoreUnavailable(StoreError):
    status = 503


@dataclass(frozen=True)
class NewReference:
    embedding: np.ndarray
    image_sha256: str
    filename: str | None
    image_format: str | None
    width: int
    height: int

    def describe(self) -> dict:
        """The image as the API names it back (its embedding aside)."""
        return {"filename": self.filename, "sha256": self.image_sha256, "format": self.image_format,
                "width": self.width, "height": self.height}


def migrate(dsn: str, model_id: str, dim: int) -> int:
    """Create or update the schema; refuse a database that holds another model's embeddings.
    Returns the schema version."""
    try:
        conn = psycopg.connect(dsn, autocommit=False, connect_timeout=10)
    except psycopg.Error as err:
        raise StoreUnavailable(f"cannot reach the database ({err})") from err
    with conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                         "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, statements in MIGRATIONS:
                if version in done:
                    continue
                conn.execute(sql.SQL(statements).format(dim=sql.Literal(int(dim)),
                                                        **{k: sql.Literal(v) for k, v in CENTROID_GRAPH.items()}))
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                log.info("database schema migrated to version %d", version)
            row = conn.execute("SELECT model_id, embedding_dim FROM model_info").fetchone()
            if row is None:
                conn.execute("INSERT INTO model_info (model_id, embedding_dim) VALUES (%s, %s)", (model_id, dim))
            elif row != (model_id, dim):
                raise StoreError(f"this database holds the embeddings of model {row[0]} ({row[1]}-d); the model "
                                 f"being served is {model_id} ({dim}-d). Serve that model, or use another "
                                 "database (--db / --data-dir): embeddings of different models are not comparable")
        return max(v for v, _ in MIGRATIONS)


class SignatureStore:
    def __init__(self, dsn: str, model_id: str, dim: int, pool_size: int = 8, timeout: float = 5.0):
        migrate(dsn, model_id, dim)
        self.dim = dim
        self.pool = ConnectionPool(dsn, min_size=1, max_size=pool_size, timeout=timeout, open=True,
                                   configure=register_vector, check=ConnectionPool.check_connection,
                                   kwargs={"row_factory": dict_row, "connect_timeout": max(1, int(timeout))})

    def close(self) -> None:
        self.pool.close()

    def _connection(self):
        return _Guarded(self.pool)

    def ready(self) -> bool:
        try:
            with self._connection() as conn:
                conn.execute("SELECT 1")
            return True
        except StoreUnavailable:
            return False

    # -- signers ---------------------------------------------------------------------------------
    def create_signer(self, signer_id: str, display_name: str | None) -> dict:
        with self._connection() as conn:
            row = conn.execute("INSERT INTO signers (id, display_name) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING "
                               "RETURNING id, display_name, created_at", (signer_id, display_name)).fetchone()
        if row is None:
            raise StoreError(f"signer {signer_id!r} already exists", 409)
        return {**row, "n_references": 0}

    def signers(self, limit: int, offset: int) -> list[dict]:
        with self._connection() as conn:
            return conn.execute(
                "SELECT s.id, s.display_name, s.created_at, count(r.id) AS n_references FROM signers s "
                "LEFT JOIN signature_references r ON r.signer_id = s.id GROUP BY s.id ORDER BY s.id "
                "LIMIT %s OFFSET %s", (limit, offset)).fetchall()

    def signer(self, signer_id: str) -> dict:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT s.id, s.display_name, s.created_at, count(r.id) AS n_references FROM signers s "
                "LEFT JOIN signature_references r ON r.signer_id = s.id WHERE s.id = %s GROUP BY s.id",
                (signer_id,)).fetchone()
        if row is None:
            raise StoreError(f"unknown signer {signer_id!r}", 404)
        return row

    def delete_signer(self, signer_id: str) -> None:
        with self._connection() as conn:
            if conn.execute("DELETE FROM signers WHERE id = %s", (signer_id,)).rowcount == 0:
                raise StoreError(f"unknown signer {signer_id!r}", 404)

    def count(self) -> dict:
        with self._connection() as conn:
            return conn.execute("SELECT (SELECT count(*) FROM signers) AS signers, "
                                "(SELECT count(*) FROM signature_references) AS n_references").fetchone()

    # -- references ------------------------------------------------------------------------------
    def add_references(self, signer_id: str, references: list[NewReference], max_per_signer: int) -> list[dict]:
        """All or nothing. An image already enrolled for this signer (same SHA-256) is not stored twice:
        it comes back with ``"duplicate": true``."""
        with self._connection() as conn:
            with conn.transaction():
                # Row lock: concurrent enrolments for one signer take turns (the count below stays true).
                if conn.execute("SELECT 1 FROM signers WHERE id = %s FOR UPDATE", (signer_id,)).fetchone() is None:
                    raise StoreError(f"unknown signer {signer_id!r}", 404)
                have = conn.execute("SELECT count(*) AS n FROM signature_references WHERE signer_id = %s",
                                    (signer_id,)).fetchone()["n"]
                out = []
                for ref in references:
                    row = conn.execute(
                        "INSERT INTO signature_references (signer_id, embedding, image_sha256, filename, image_format, "
                        "width, height) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (signer_id, image_sha256) "
                        "DO NOTHING RETURNING id, image_sha256, filename, image_format, width, height, created_at",
                        (signer_id, ref.embedding.astype(np.float32), ref.image_sha256, ref.filename, ref.image_format,
                         ref.width, ref.height)).fetchone()
                    if row is None:
                        row = conn.execute(
                            "SELECT id, image_sha256, filename, image_format, width, height, created_at "
                            "FROM signature_references WHERE signer_id = %s AND image_sha256 = %s",
                            (signer_id, ref.image_sha256)).fetchone()
                        out.append({**row, "duplicate": True})
                    else:
                        have += 1
                        out.append({**row, "duplicate": False})
                if have > max_per_signer:
                    raise StoreError(f"signer {signer_id!r} would have {have} references; the limit is "
                                     f"{max_per_signer}", 409)
                conn.execute(_UPDATE_CENTROID, {"id": signer_id})
        return out

    def references(self, signer_id: str) -> list[dict]:
        with self._connection() as conn:
            self._require_signer(conn, signer_id)
            return conn.execute("SELECT id, image_sha256, filename, image_format, width, height, created_at "
                                "FROM signature_references WHERE signer_id = %s ORDER BY id", (signer_id,)).fetchall()

    def reference_embeddings(self, signer_id: str) -> np.ndarray:
        with self._connection() as conn:  # one round trip: verification's only query
            rows = conn.execute("SELECT r.embedding FROM signers s LEFT JOIN signature_references r "
                                "ON r.signer_id = s.id WHERE s.id = %s ORDER BY r.id", (signer_id,)).fetchall()
        if not rows:
            raise StoreError(f"unknown signer {signer_id!r}", 404)
        vectors = [_array(r["embedding"]) for r in rows if r["embedding"] is not None]
        return np.stack(vectors) if vectors else np.zeros((0, self.dim))

    def delete_reference(self, signer_id: str, reference_id: int) -> None:
        with self._connection() as conn:
            with conn.transaction():
                self._require_signer(conn, signer_id)
                if conn.execute("DELETE FROM signature_references WHERE signer_id = %s AND id = %s",
                                (signer_id, reference_id)).rowcount == 0:
                    raise StoreError(f"signer {signer_id!r} has no reference {reference_id}", 404)
                conn.execute(_UPDATE_CENTROID, {"id": signer_id})

    @staticmethod
    def _require_signer(conn, signer_id: str) -> None:
        if conn.execute("SELECT 1 FROM signers WHERE id = %s", (signer_id,)).fetchone() is None:
            raise StoreError(f"unknown signer {signer_id!r}", 404)

    # -- search ----------------------------------------------------------------------------------
    def nearest_signers(self, embedding: np.ndarray, k: int, candidates: int | None = None,
                        breadth: int | None = None) -> list[dict]:
        """The ``k`` enrolled signers whose closest reference is most similar to ``embedding``: the
        ``candidates`` signers with the nearest centroids (HNSW, approximate, searching ``breadth`` wide), then
        every reference of those compared exactly."""
        candidates = max(candidates or DEFAULT_CANDIDATES, k)
        breadth = min(max(breadth or DEFAULT_SEARCH_BREADTH, candidates), 1000)  # it returns at most this many
        with self._connection() as conn:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(breadth)))
                return conn.execute(
                    "SELECT r.signer_id, max(1 - (r.embedding <=> %(q)s)) AS similarity, count(*) AS n_references "
                    "FROM (SELECT id FROM signers WHERE centroid IS NOT NULL ORDER BY centroid <=> %(q)s "
                    "LIMIT %(n)s) nearest JOIN signature_references r ON r.signer_id = nearest.id "
                    "GROUP BY r.signer_id ORDER BY similarity DESC LIMIT %(k)s",
                    {"q": np.asarray(embedding, np.float32), "n": candidates, "k": k}).fetchall()

def _array(value) -> np.ndarray:
    """A pgvector value as float64 (pgvector returns numpy arrays or, in newer releases, Vector objects)."""
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, np.float64)


class _Guarded:
    """A pooled connection whose database errors become StoreUnavailable (the database is down or
    restarting); other errors pass through."""

    def __init__(self, pool: ConnectionPool):
        self.pool, self._context = pool, None

    def __enter__(self):
        try:
            self._context = self.pool.connection()
            return self._context.__enter__()
        except (PoolTimeout, psycopg.OperationalError) as err:
            raise StoreUnavailable(f"database unavailable ({type(err).__name__})") from err

    def __exit__(self, kind, value, traceback):
        try:
            self._context.__exit__(kind, value, traceback)
        except (PoolTimeout, psycopg.OperationalError) as err:
            raise StoreUnavailable(f"database unavailable ({type(err).__name__})") from err
        if isinstance(value, psycopg.OperationalError):
            raise StoreUnavailable(f"database unavailable ({type(value).__name__})") from value
        return False
