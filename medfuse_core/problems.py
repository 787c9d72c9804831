"""Problems found while reading data: one structured type shared by every loader and the validator.

A loader never loses a whole patient for one bad row: it records a `Problem` and goes on. Only input
that cannot be read at all raises `DataError`, which carries the same structured problem so the
caller can print "file: field: expected ..." without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

MAX_MESSAGE_CHARS = 600  # a message quotes what it read only as a short excerpt: a field of a hostile file can be
MAX_FIELD_CHARS = 200  # 100,000 characters long (or /etc/passwd); longer texts are cut here, for every reader


class Severity(str, Enum):
    INFO = "info"  # nothing is wrong or lost, but a person should know (e.g. HTML in a note, kept as text)
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where (file, field) and what was expected."""

    severity: Severity
    file: str
    field: str
    message: str

    def __post_init__(self) -> None:
        for name, limit in (("message", MAX_MESSAGE_CHARS), ("field", MAX_FIELD_CHARS)):
            text = getattr(self, name)
            if len(text) > limit:
                object.__setattr__(self, name, text[:limit] + f"... (cut; {len(text):,} characters)")

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{self.severity.value}: {where}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity.value, "file": self.file, "field": self.field, "message": self.message}


def info(file: str, field: str, message: str) -> Problem:
    return Problem(Severity.INFO, str(file), field, message)


def warning(file: str, field: str, message: str) -> Problem:
    return Problem(Severity.WARNING, str(file), field, message)


def error(file: str, field: str, message: str) -> Problem:
    return Problem(Severity.ERROR, str(file), field, message)


class DataError(ValueError):
    """Input that cannot be used at all (unreadable file, missing required field)."""

    def __init__(self, file: str, field: str, message: str):
        self.problem = error(file, field, message)
        super().__init__(str(self.problem))


def excerpt(text: str, limit: int = 40) -> str:
    """A short, escaped quotation of something read from a file or a link, for a message: repr() escapes
    control characters and markup stays text; never more than `limit` characters of it."""
    text = str(text)
    return repr(text[:limit]) + (f" (+{len(text) - limit:,} more characters)" if len(text) > limit else "")
