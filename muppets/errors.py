"""Errors that point at the user's input. Sits under every layer and imports nothing.

The CLI prints `muppets: error: <str(error)>` and exits with status 2 for any MuppetsError,
so the message must be complete on one line: where (FILE:LINE) and what is wrong.
"""

from __future__ import annotations


class MuppetsError(Exception):
    """Base class for errors a user can fix without reading a traceback."""


class InputError(MuppetsError):
    """Bad input: a file, a line in it, a config value or a command-line argument."""

    def __init__(self, message: str, path: object = None, line: int | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or ""
        if where and self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}" if where else self.message


class ConfigError(InputError):
    """A config value or key that cannot work (names the field)."""


class TrainingError(MuppetsError):
    """Training cannot go on (NaN loss, incompatible resume); names the step or the field."""
