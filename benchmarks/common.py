"""Shared helpers for the benchmarks: the machine's description and a JSON last line."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess


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


def base_parser(steps: int, workers: int = 8) -> argparse.ArgumentParser:
    """The options every throughput benchmark shares: network, input, timed steps, loader, data."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="tf_efficientnetv2_m")
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--workers", type=int, default=workers)
    parser.add_argument("--manifest", default=None, help="default: the built-in synthetic set")
    return parser
