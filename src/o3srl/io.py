"""Atomic file writes: a reader never sees a half-written file, and a crash leaves the old file in place."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def publish(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Give a finished temporary file the permissions of a normal new file, then move it into place atomically."""
    os.chmod(tmp, _umask_mode())
    os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_writable_dir(directory: str | os.PathLike[str], what: str) -> Path:
    """Create ``directory`` if needed and check that a file can be written in it, before long work that would
    otherwise fail only at its end; raises one :class:`~o3srl.errors.O3SRLError` naming ``what`` and the reason."""
    from o3srl.errors import O3SRLError

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise O3SRLError(f"{what}: cannot write to directory {directory} (it is a file, not a directory)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise O3SRLError(f"{what}: cannot write to directory {directory} ({reason})") from None
    return directory
