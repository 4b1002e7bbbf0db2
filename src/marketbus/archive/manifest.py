"""The archive's commit record: per-stream resume positions and the files of the last
commit, as one small JSON document. Pure: encoding and the commit step, no I/O.

A flush stages its files under temporary names, then writes the manifest naming them
(``pending``) with the positions they reach, then renames them into place. The
manifest is the commit point: after a crash, a restart renames what the manifest
names (roll forward) and deletes any other temporary file (never committed, its rows
are still in the stream after the recorded position). So a visible file is always
complete and the positions never run ahead of, nor behind, the visible files.
"""

from __future__ import annotations

from typing import Final

import msgspec

from marketbus.archive.continuity import Position

FORMAT: Final = 1


class Rename(msgspec.Struct, frozen=True):
    """A staged file: its temporary and final paths, relative to the archive root."""

    temp: str
    final: str


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What the archive has durably recorded."""

    format: int = FORMAT
    namespace: str
    generation: int = 0
    """Commits so far; file names carry the generation that committed them."""
    positions: dict[str, Position] = {}
    """Stream name -> the last entry recorded from it (in a visible file, or skipped)."""
    pending: tuple[Rename, ...] = ()
    """The files of the last commit (renamed into place right after it)."""

    def committed(self, positions: dict[str, Position], staged: list[Rename]) -> Manifest:
        """The next commit: *positions* advanced, *staged* files pending."""
        return msgspec.structs.replace(
            self,
            generation=self.generation + 1,
            positions=self.positions | positions,
            pending=tuple(staged),
        )


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Manifest)


def encode_manifest(manifest: Manifest) -> bytes:
    return _encoder.encode(manifest)


def decode_manifest(raw: bytes) -> Manifest:
    """The manifest in *raw*; ValueError says why it is not one."""
    try:
        manifest = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"not a marketbus archive manifest ({exc})") from None
    if manifest.format != FORMAT:
        raise ValueError(f"manifest format {manifest.format} is not {FORMAT}")
    return manifest
