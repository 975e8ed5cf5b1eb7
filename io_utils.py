"""One atomic writer for every file the project produces.

Every checkpoint, HDF5 file, npz cache, JSON config and report goes through
`atomic_path`: the payload is written to a temporary file in the destination
folder, flushed and fsync'ed, then renamed over the destination. A process killed
at any instant therefore leaves either the old file or the new one, never half a file.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    # The rename is only durable once the directory entry itself reaches the disk.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _link_new(tmp: Path, path: Path) -> None:
    """Give `tmp` the name `path` only if `path` does not exist (a hard link refuses an existing
    target atomically, where a rename would replace it), then drop the temporary name."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, f"{path} appeared while this process was writing it "
                              f"(another process wrote it); nothing was replaced. Pass --overwrite "
                              f"to replace it or --out to choose another file") from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # A file system without hard links: check, then rename (a narrow race remains).
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, f"{path} appeared while this process was writing "
                                  f"it; nothing was replaced. Pass --overwrite to replace it") from None
        os.rename(tmp, path)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it to `path`.

    On any exception the temporary file is removed and `path` is left untouched.
    A full disk or a read-only folder raises an OSError naming `path`. With `replace=False`
    an existing `path` (even one another process created meanwhile) is never replaced: a
    FileExistsError is raised instead.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror}; check that the folder "
                      f"is writable and has free space") from err
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the permissions open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        if replace:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
        _fsync_dir(folder)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, (FileNotFoundError, FileExistsError)):
            raise
        reason = os.strerror(err.errno) if err.errno else str(err).splitlines()[0]
        raise OSError(err.errno, f"cannot write {path}: {reason}; the previous "
                      f"file (if any) is untouched. Free disk space or choose another folder") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp_path)` and atomically move the result to `path`."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` that never leaves a partial file at `path`."""
    atomic_write_with(path, lambda tmp: torch.save(obj, tmp))


def atomic_savez(path: str | os.PathLike, **arrays: Any) -> None:
    """`np.savez` (uncompressed) to exactly `path` (no '.npz' appended), atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    atomic_write_with(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    atomic_write_with(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a JSONL log (objects with a numeric "itr"); a torn or invalid line (a crash, or a
    writer mid-append) is skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("itr"), (int, float)):
            records.append(record)
    return records
