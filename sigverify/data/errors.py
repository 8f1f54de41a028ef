"""Errors for bad input: each names the file and the problem."""
from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A problem with one input file or manifest row."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class NotAnImage(DataError):
    """The content is no image format that can be decoded (the file name is never trusted)."""


class ImageTooLarge(DataError):
    """More pixels than allowed: refused before decoding (decompression bombs included)."""


class DataProblems(ValueError):
    """Several bad files found by a scan; ``problems`` holds each one."""

    def __init__(self, problems: list[DataError]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} bad file(s):\n{lines}{more}")
