"""Shared helpers for the benchmarks: the machine's description, sizes that fit the device, a memory
check before the first big batch, and a JSON last line."""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable, Iterable


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or "cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def emit(figures: dict) -> None:
    """Benchmarks end with their figures as one JSON object on the last line."""
    print(json.dumps({"machine": machine(), "commit": commit(), **figures}))


def base_parser() -> argparse.ArgumentParser:
    """The options every throughput benchmark shares: network, input, timed steps, loader, data.
    Unset options take the device's defaults (:func:`apply_device_defaults`)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--manifest", default=None, help="default: the built-in synthetic set")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="NHWC weights in both paths, on any device (the model's channels_last)")
    return parser


def apply_device_defaults(args: argparse.Namespace, defaults: dict[str, dict], device) -> str:
    """Fill the options left unset with ``defaults[device.type]``: the write-up's network on a GPU, a
    size that two CPU cores finish in minutes on a CPU. Returns a line saying what was chosen."""
    chosen = defaults["cuda" if device.type == "cuda" else "cpu"]
    filled = [key for key, value in chosen.items() if getattr(args, key, None) is None]
    for key in filled:
        setattr(args, key, chosen[key])
    return (f"defaults for {device.type}: " + ", ".join(f"{key}={chosen[key]}" for key in filled)) if filled else ""


def peak_rss() -> int:
    """This process's peak resident memory so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_limit() -> int:
    """Bytes this process may still grow to: what the kernel reports available (and the cgroup's limit,
    if lower), plus what the process already holds."""
    available = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        cgroup = open("/sys/fs/cgroup/memory.max").read().strip()
        if cgroup.isdigit():
            used = int(open("/sys/fs/cgroup/memory.current").read())
            available = min(available or 2**62, int(cgroup) - used)
    except OSError:
        pass
    current = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return (available if available is not None else 2**62) + current


def require_memory(step: Callable[[int], None], batch: int, device, what: str, small: int = 2, larger: int = 6) -> None:
    """Stop with a clear message, before the timed run, when ``batch`` cannot fit in memory.

    ``step(n)`` runs the benchmark's work on a batch of n. The peak memory after ``small`` and
    ``larger`` gives the cost per image, extrapolated to ``batch``. Without this check a CPU run of
    a GPU-sized batch is killed by the kernel with no message at all.
    """
    import torch

    if device.type == "cuda":
        try:
            step(batch)  # the device raises a clear out-of-memory error of its own; it is caught here
        except torch.OutOfMemoryError as err:
            raise SystemExit(f"{what}: batch {batch} does not fit in the GPU's memory ({err}); "
                             "choose a smaller --batch/--p, --height/--width or --backbone") from None
        return
    step(small)
    low = peak_rss()
    step(larger)
    high = peak_rss()
    need = high + max(high - low, 0) / (larger - small) * max(batch - larger, 0)
    limit = memory_limit()
    if need > 0.9 * limit:
        raise SystemExit(f"{what}: batch {batch} needs about {need / 2**30:.1f} GiB of memory on this CPU, and "
                         f"{limit / 2**30:.1f} GiB are available; choose a smaller --batch/--p, --height/--width or "
                         "--backbone (the defaults fit the device: leave them out)")


def sync(device) -> None:
    """Wait for the device's queued work, so that a clock read after it measures that work."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def images_per_second(step: Callable[[int], None], batch: int, device, steps: int, warmup: int) -> float:
    """``step(batch)`` timed over ``steps`` calls after ``warmup`` untimed ones: images per second."""
    for _ in range(warmup):
        step(batch)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def bulk_load(dsn: str, signers: Iterable[str], references: Iterable[tuple], centroids: bool = True) -> None:
    """Signers and their references (signer id, unit embedding, image hash) written straight into the store's
    tables by COPY, far faster than enrolling them through the service; then, with ``centroids``, every signer's
    centroid, as enrolment keeps it (a benchmark that times building the centroids' index does that itself)."""
    import psycopg
    from pgvector.psycopg import register_vector

    from sigverify.serving.store import ALL_CENTROIDS

    with psycopg.connect(dsn) as conn:
        register_vector(conn)
        with conn.cursor() as cursor:
            with cursor.copy("COPY signers (id) FROM STDIN") as copy:
                for signer in signers:
                    copy.write_row((signer,))
            with cursor.copy("COPY signature_references (signer_id, embedding, image_sha256) FROM STDIN "
                             "WITH (FORMAT BINARY)") as copy:
                copy.set_types(["text", "vector", "text"])
                for row in references:
                    copy.write_row(row)
        if centroids:
            conn.execute(ALL_CENTROIDS)


def latency_percentiles(seconds) -> dict:
    """p50/p95/p99 of durations given in seconds, in milliseconds."""
    import numpy as np

    ms = np.asarray(seconds) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}
