"""Atomic file writes, the one implementation every writer uses (bottom layer, standard library).

A file is written to a temporary name beside its target (``NAME.tmp-PID``), flushed, fsynced and
renamed over the target, so a reader sees the old file or the new one, never half of one. A write
that fails removes its temporary file before the error goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from maxact.errors import MaxactError

TMP_TAG = ".tmp-"  # temporary files are NAME.tmp-PID
STAGING_TAG = ".staging-"  # staging folders are FOLDER/.staging-PID


def tmp_path(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_TAG}{os.getpid()}")


def staging_path(folder: Path) -> Path:
    """This process's staging folder inside ``folder`` (files are written there, then moved)."""
    return Path(folder) / f"{STAGING_TAG}{os.getpid()}"


@contextlib.contextmanager
def atomic_file(path: Path | str) -> Iterator[IO[bytes]]:
    """``with atomic_file(p) as f: f.write(...)``: p appears complete on success, untouched on error."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with fsynced_file(tmp) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def write_json_atomic(path: Path | str, obj, indent: int | None = 1, ensure_ascii: bool = True) -> None:
    """JSON to ``path`` atomically (parent folders are made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii).encode())


@contextlib.contextmanager
def fsynced_file(path: Path | str) -> Iterator[IO[bytes]]:
    """A file not yet visible to readers (inside a staging folder), flushed and fsynced on close."""
    with open(path, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def fsync_write(path: Path, data: bytes) -> None:
    """Write and fsync a file that is not yet visible to readers (inside a staging folder)."""
    with fsynced_file(path) as f:
        f.write(data)


def leftover_pid(name: str) -> int | None:
    """The process id in a temporary file's (``NAME.tmp-PID``) or staging folder's (``.staging-PID``)
    name; None for any other name."""
    if TMP_TAG in name:
        pid = name.rsplit(TMP_TAG, 1)[1]
    elif name.startswith(STAGING_TAG):
        pid = name[len(STAGING_TAG):]
    else:
        return None
    return int(pid) if pid.isdigit() else None


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete this tool's temporary files (``*.tmp-PID``) and staging folders (``.staging-PID``) in
    ``folder`` left by a killed run, when their process is gone; returns what was removed."""
    import shutil

    removed = []
    if not folder.is_dir():
        return removed
    for item in folder.iterdir():
        pid = leftover_pid(item.name)
        if pid is None or (pid != os.getpid() and _alive(pid)):
            continue
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)
        removed.append(item)
    return removed


def probe_writable(folder: Path) -> None:
    """Create and remove a temporary file in ``folder``; raises the OSError that writing would meet."""
    probe = tmp_path(Path(folder) / ".maxact-probe")
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    probe.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_writable_file(path: Path | str, what: str) -> Path:
    """Refuse, before any work, an output file that cannot be written: a folder, a missing parent
    folder, a place this process may not write (probed with the temporary name, then removed).
    ``what`` names it in the message (e.g. "--json")."""
    path = Path(path)
    if path.is_dir():
        raise MaxactError(f"{what} {path} is a folder; name a file to write")
    if not path.parent.is_dir():
        raise MaxactError(f"{what} {path}: the folder {path.parent} does not exist; create it first")
    try:
        probe_writable(path.parent)
    except OSError as e:
        raise MaxactError(f"{what} {path} cannot be written: {e.strerror}") from None
    return path
