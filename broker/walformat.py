"""What the journal reads of SQLite's WAL files directly, without going through SQLite.

Two readers, both of formats documented at sqlite.org/walformat.html:

* ``WalIndex``: the number of frames in the WAL, from the wal-index (``-shm``), after each commit.
* ``read_wal_header`` and ``frames_after``: the WAL file's own header and frame headers, for the
  start-up check that tells a damaged WAL from a crashed one (``broker.integrity``).

The wal-index: after every commit the committer asks whether the WAL has grown past the
checkpoint threshold. Asking SQLite costs a round trip to the SQLite thread (and the only pragma
that tells, ``wal_checkpoint``, checkpoints as it answers); the WAL file's size does not tell
either, since a checkpoint lets the WAL restart from its first frame without shrinking the file.
The wal-index (the ``-shm`` file, sqlite.org/walformat.html) holds the answer: ``mxFrame``, the
number of valid frames, a native-endian u32 at byte 16 of its header, which SQLite rewrites on
every commit and resets to 0 when the WAL restarts. Reading it is one ``pread`` on a descriptor
kept open.

This depends on a file layout, not on an API. The layout is part of SQLite's file format
(processes running different SQLite versions share one ``-shm``, so it cannot change without a
new format), and ``test_wal_index_frames_match_sqlites_own_count``
(tests/tcp/test_journal_thread.py) checks it against SQLite's own count (``PRAGMA
wal_checkpoint``'s second column): if a SQLite release ever moved it, that test fails.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

WAL_HEADER_BYTES: Final = 32
WAL_FRAME_HEADER_BYTES: Final = 24
_MX_FRAME: Final = struct.Struct("=I")
_MX_FRAME_OFFSET: Final = 16
_O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_WAL_MAGIC_LE: Final = 0x377F0682  # checksums over little-endian words
_WAL_MAGIC_BE: Final = 0x377F0683  # checksums over big-endian words
_WAL_VERSION: Final = 3007000
_WAL_HEADER: Final = struct.Struct(">IIII8sII")  # magic, version, page size, seq, salts, checksum
_FRAME_HEADER: Final = struct.Struct(">II8s")  # page number, database size if a commit, salts
_MASK: Final = 0xFFFFFFFF


def wal_bytes_for(frames: int, page_size: int) -> int:
    """The size of a WAL holding ``frames`` frames of ``page_size`` pages (0 for none)."""
    if frames <= 0:
        return 0
    return WAL_HEADER_BYTES + frames * (page_size + WAL_FRAME_HEADER_BYTES)


class WalIndex:
    """Reads ``mxFrame`` from a database's ``-shm`` file; falls back to the WAL file's size."""

    __slots__ = ("_fd", "_shm_path", "_wal_path")

    def __init__(self, db_path: Path) -> None:
        self._shm_path = f"{db_path}-shm"
        self._wal_path = f"{db_path}-wal"
        self._fd: int | None = None

    def frames(self) -> int | None:
        """The valid frames in the WAL, or ``None`` when the wal-index cannot be read."""
        try:
            # Kept open: this runs after every commit. The file lives as long as the connection.
            if self._fd is None:
                self._fd = os.open(self._shm_path, os.O_RDONLY | _O_CLOEXEC)
            header = os.pread(self._fd, _MX_FRAME_OFFSET + 4, 0)
        except OSError:
            self.close()
            return None
        if len(header) < _MX_FRAME_OFFSET + 4:
            return 0
        frames: int = _MX_FRAME.unpack_from(header, _MX_FRAME_OFFSET)[0]
        return frames

    def wal_bytes(self, page_size: int) -> int:
        """The bytes of WAL content not yet reset by a checkpoint (0 if unknown or empty)."""
        frames = self.frames()
        if frames is not None:
            return wal_bytes_for(frames, page_size)
        try:
            return os.path.getsize(self._wal_path)
        except OSError:
            return 0

    def close(self) -> None:
        """Close the kept descriptor (reopened on the next read)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


# --------------------------------------------------------------------------- the WAL file


@dataclass(frozen=True, slots=True)
class WalHeader:
    """The fields of a valid WAL header that the start-up check needs."""

    page_size: int
    salts: bytes
    """Salt-1 and salt-2: every frame written since the WAL last restarted carries them."""

    def frame_offset(self, index: int) -> int:
        """Where frame ``index`` (0-based) starts in the WAL file."""
        return WAL_HEADER_BYTES + index * (self.page_size + WAL_FRAME_HEADER_BYTES)


def _checksum(data: bytes, big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes), starting from zero."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    s0 = s1 = 0
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & _MASK
        s1 = (s1 + words[i + 1] + s0) & _MASK
    return s0, s1


def read_wal_header(data: bytes) -> WalHeader | None:
    """The WAL header at the start of ``data``, or ``None`` if it is not a valid one.

    Valid means SQLite would use it: the magic number, the format version, a page size that is a
    power of two from 512 to 65,536, and the header's own checksum all check out. SQLite ignores a
    WAL whose header is not valid, and every commit in it with the header.
    """
    if len(data) < WAL_HEADER_BYTES:
        return None
    magic, version, page_size, _, salts, sum0, sum1 = _WAL_HEADER.unpack_from(data)
    if magic not in (_WAL_MAGIC_LE, _WAL_MAGIC_BE) or version != _WAL_VERSION:
        return None
    if not 512 <= page_size <= 65_536 or page_size & (page_size - 1):
        return None
    if _checksum(data[:24], magic == _WAL_MAGIC_BE) != (sum0, sum1):
        return None
    return WalHeader(page_size, salts)


def frames_after(wal: Path, header: WalHeader, first: int) -> tuple[int, int]:
    """Count the frames from index ``first`` to the end of ``wal`` that carry the header's salts.

    A frame that carries the current salts was written since the WAL last restarted; frames left
    over from before that restart carry older salts.

    Returns:
        ``(frames, commits)``: such frames, and how many of them end a transaction (a commit
        frame records the database size; other frames record 0).

    Raises:
        OSError: the file cannot be read.
    """
    frames = commits = 0
    frame_bytes = header.page_size + WAL_FRAME_HEADER_BYTES
    with wal.open("rb", buffering=0) as file:
        size = os.fstat(file.fileno()).st_size
        offset = header.frame_offset(first)
        while offset + frame_bytes <= size:
            raw = os.pread(file.fileno(), _FRAME_HEADER.size, offset)
            _, db_size, salts = _FRAME_HEADER.unpack(raw)
            if salts == header.salts:
                frames += 1
                commits += db_size != 0
            offset += frame_bytes
    return frames, commits
