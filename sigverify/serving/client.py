"""Waiting for a starting service (scripts, benchmarks and tests that launch `sigverify serve`)."""
from __future__ import annotations

import subprocess
import time

import httpx


def wait_ready(url: str, process: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Return once ``url``/readyz answers 200; raise if ``process`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the service exited with code {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service at {url} was not ready within {timeout:g} s")
        time.sleep(0.3)
