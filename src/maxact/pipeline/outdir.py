"""The output folder of `maxact atlas` and `maxact merge`: refused before any work when writing
there could destroy something or cannot succeed, and cleaned of temporary files and staging folders
(``NAME.tmp-PID``, ``.staging-PID``) at the start of a run and on every error."""

from __future__ import annotations

import contextlib
import errno
import math
from collections.abc import Iterator
from pathlib import Path

import torch

from maxact.errors import MaxactError
from maxact.fsio import atomic_file, leftover_pid, probe_writable, remove_leftovers
from maxact.store import format as F


def is_atlas_folder(out: Path) -> bool:
    """A finished atlas, an interrupted run or a shard partial: what --overwrite may replace."""
    return (out / F.MANIFEST).exists() or (out / F.RUN_DIR).exists() or (out / F.PARTIAL).exists()


def check_out(out: Path, *, resume: bool = False, overwrite: bool = False, merging: bool = False) -> None:
    """Refuse ``out`` before any work: a file, a folder of other files, a place that cannot be
    written, or an atlas (or run, or partial) that would be replaced without --overwrite."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MaxactError(f"--out {out} is a file, not a folder; give a new or empty folder")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if leftover_pid(p.name) is None)
        if others and not is_atlas_folder(out):
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise MaxactError(f"--out {out} is a folder of other files ({shown}), not an atlas; refusing to "
                              f"write into it: give a new or empty folder")
        if (out / F.MANIFEST).exists() and not overwrite:
            raise MaxactError(f"{out} already holds a finished atlas; use --overwrite to replace it, or another --out")
        if not merging:
            if (out / F.PARTIAL).exists() and not overwrite:
                raise MaxactError(f"{out} already holds a finished shard partial; use --overwrite, or another --out")
            if (out / F.RUN_DIR / F.CHECKPOINT).exists() and not resume and not overwrite:
                raise MaxactError(f"{out} holds an interrupted run; continue it with --resume (same options), "
                                  f"or start over with --overwrite")
    _check_writable(out)


def _check_writable(out: Path) -> None:
    """Probe the folder (or its nearest existing parent) by creating and removing a temporary file."""
    folder = out
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise MaxactError(f"--out {out}: {folder} is a file, not a folder; give a folder path")
    try:
        probe_writable(folder)
    except OSError as e:
        raise MaxactError(f"--out {out} cannot be written ({e.strerror}); give a folder you can write to") from None


def clean(out: Path) -> None:
    """Remove the temporary files and staging folders of dead processes (and this one's)."""
    for folder in (out, out / F.RUN_DIR):
        remove_leftovers(folder)


def disk_full(e: BaseException | None) -> bool:
    """Whether an error is, or was raised while handling, a full disk (torch.save wraps it)."""
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def cleaned_on_error(out: Path) -> Iterator[None]:
    """Leftovers of ``out`` are removed at the start and on any error; a full disk becomes one line."""
    clean(out)
    try:
        yield
    except MaxactError:
        clean(out)
        raise
    except BaseException as e:
        clean(out)
        if disk_full(e):  # the big writes say their own size: this is a small JSON file
            raise MaxactError(f"no space left on {out} (needed about 1 MB); free some space and run again") from None
        raise


def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def save_state(obj: dict, path: Path) -> None:
    """torch.save ``obj`` to ``path`` atomically; a full disk raises one line with the size needed."""
    try:
        with atomic_file(path) as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as e:
        if not disk_full(e):
            raise
        needed_mb = max(1, math.ceil(_tensor_bytes(obj) / 1e6))
        raise MaxactError(f"no space left on {path.parent} (needed about {needed_mb} MB); free some space "
                          f"and run again") from None
