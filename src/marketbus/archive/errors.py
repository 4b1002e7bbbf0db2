"""The archive's errors, under marketbus's `MarketbusError` tree."""

from __future__ import annotations

from marketbus.shared.errors import MarketbusError


class ArchiveError(MarketbusError):
    """The archive directory cannot be used as asked (locked by another recorder, a
    manifest from another namespace, ...). The message says what to do."""


class ArchiveFileError(ArchiveError):
    """One file in the archive is not a readable marketbus archive file (corrupt,
    truncated, or foreign). ``path`` names it; the rest of the archive is untouched."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"{path}: {reason}. It is not a marketbus archive file: move it out of the "
            "archive directory (nothing else is affected)"
        )
        self.path = path
