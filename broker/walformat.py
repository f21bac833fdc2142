"""What the journal reads of SQLite's WAL files directly, without going through SQLite.

Theory of operation: after every commit the committer asks whether the WAL has grown past the
checkpoint threshold. Asking SQLite costs a round trip to the SQLite thread (and the only pragma
that tells, ``wal_checkpoint``, checkpoints as it answers); the WAL file's size does not tell
either, since a checkpoint lets the WAL restart from its first frame without shrinking the file.
The wal-index (the ``-shm`` file, sqlite.org/walformat.html) holds the answer: ``mxFrame``, the
number of valid frames, a native-endian u32 at byte 16 of its header, which SQLite rewrites on
every commit and resets to 0 when the WAL restarts. Reading it is one ``pread`` on a descriptor
kept open.

This depends on a file layout, not on an API. The layout is part of SQLite's file format
(processes running different SQLite versions share one ``-shm``, so it cannot change without a
new format), and ``test_wal_index_frames_match_sqlites_own_count`` (tests/test_journal_thread.py)
checks it against SQLite's own count (``PRAGMA wal_checkpoint``'s second column): if a SQLite
release ever moved it, that test fails.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from typing import Final

WAL_HEADER_BYTES: Final = 32
WAL_FRAME_HEADER_BYTES: Final = 24
_MX_FRAME: Final = struct.Struct("=I")
_MX_FRAME_OFFSET: Final = 16
_O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


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

