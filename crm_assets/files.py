"""Writing output files (exports, charts): atomically, with the umask's mode, naming the folder on failure."""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Callable
from pathlib import Path

_PLAIN_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EROFS: "the file system is read-only",
}


class OutputWriteError(OSError):
    """A file could not be written; the message names the folder, the reason and what to do."""


def write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Write through `write(temporary path)`, then rename: readers see the old file or the new one.

    The file gets the mode the umask gives (0644 under 022), like any file the user creates; on any
    failure the temporary file is removed and the target is left as it was.
    """
    folder = target.parent
    tmp = folder / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # mode 0666 & ~umask
        write(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        _discard(tmp)
        raise _plain(exc, target) from exc
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):  # never there, or its folder cannot be made: nothing to clean
        tmp.unlink(missing_ok=True)


def write_bytes_atomically(target: Path, data: bytes) -> None:
    write_atomically(target, lambda tmp: tmp.write_bytes(data))


def _plain(exc: OSError, target: Path) -> OutputWriteError:
    reason = _PLAIN_REASONS.get(exc.errno or 0, (exc.strerror or str(exc)).lower())
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if full:
        fix = "free space there or point CRM_EXPORT_DIR at a folder with room"
    else:
        fix = "point CRM_EXPORT_DIR at a folder this process can create and write"
    error = OutputWriteError(
        f"cannot write {target.name} in the folder {target.parent}: {reason}. Fix: {fix}, then run again "
        "(the previous files are intact)."
    )
    error.errno = exc.errno
    return error
