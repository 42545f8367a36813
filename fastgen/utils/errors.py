"""Exceptions as one line of text, for the one-line errors fastgen's commands print."""

from __future__ import annotations


def one_line(exc: BaseException, limit: int = 240) -> str:
    """An exception's message on one line (torch's span several), at most `limit` characters;
    the exception's type name when it has no message."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
