"""What every ``sigverify`` command's option parser shares: help texts read as plain text.

Module docstrings are written in reST (``sigverify export``, :func:`name`); ``--help`` prints them
without that markup.
"""
from __future__ import annotations

import argparse
import re

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")  # :func:`name` -> name
_LITERAL = re.compile(r"``([^`]+)``")  # ``code`` -> code


def plain_text(doc: str | None) -> str:
    """``doc`` without reST roles and literal markup."""
    return _LITERAL.sub(r"\1", _ROLE.sub(r"\1", doc or ""))


def command_parser(prog: str, doc: str | None, *, first_paragraph: bool = False,
                   raw: bool = False) -> argparse.ArgumentParser:
    """An argument parser whose description is ``doc`` (its first paragraph only, if asked) as plain text;
    ``raw`` keeps the description's line breaks (for docstrings with examples)."""
    text = plain_text(doc).strip()
    if first_paragraph:
        text = text.split("\n\n")[0]
    kwargs = {"formatter_class": argparse.RawDescriptionHelpFormatter} if raw else {}
    return argparse.ArgumentParser(prog=prog, description=text, **kwargs)
