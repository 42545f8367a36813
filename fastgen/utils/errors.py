"""Exceptions as one line of text, for the one-line errors fastgen's commands print."""

from __future__ import annotations


def one_line(exc: BaseException, limit: int = 240) -> str:
    """An exception's message on one line (torch's span several), at most `limit` characters;
    the exception's type name when it has no message."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ArgumentError(ValueError):
    """A bad value of one named argument (a config field, a function's parameter).

    ``str(err)`` is the library's message, ``"{fn}: {argument} {problem}"``; a command that
    took the value from a flag reports ``"{flag} {problem}"`` instead (fastgen.cli), so the
    user reads the flag they typed, not the field or function behind it."""

    def __init__(self, fn: str, argument: str, problem: str) -> None:
        super().__init__(f"{fn}: {argument} {problem}")
        self.fn, self.argument, self.problem = fn, argument, problem

    def renamed(self, argument: str) -> ArgumentError:
        """The same error for a caller that calls the argument `argument`."""
        return ArgumentError(self.fn, argument, self.problem)


class OneLineWarning(UserWarning):
    """A note a command prints as one line, ``fastgen CMD: warning: ...`` (fastgen.cli),
    instead of Python's two lines with a source line."""


class UsageError(ValueError):
    """A command-line argument that is wrong in a way argparse cannot see."""
