"""Write an atlas directory atomically: arrays go to a staging folder, then into place, and the
manifest is written last (write, fsync, rename), so a directory without one is never mistaken for
a finished atlas and a finished atlas is never half-replaced."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from maxact.store import format as F


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: Path, obj, indent: int | None = 1) -> None:
    """Write JSON to a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    _fsync_write(tmp, json.dumps(obj, indent=indent).encode())
    os.replace(tmp, path)


def write_atlas(out: Path, arrays: dict[str, np.ndarray], manifest: dict, config: dict, vocab: list[str]) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    files = {}
    for name, arr in arrays.items():
        with open(staging / name, "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        files[name] = {"shape": list(arr.shape), "dtype": arr.dtype.str if arr.dtype.names is None else "structured"}
    _fsync_write(staging / F.VOCAB, json.dumps(vocab, ensure_ascii=False).encode())
    _fsync_write(staging / F.CONFIG, json.dumps(config, indent=1).encode())
    manifest = {**manifest, "files": files}
    if (out / F.MANIFEST).exists():
        (out / F.MANIFEST).unlink()  # the old atlas stops being valid before any file changes
    for item in staging.iterdir():
        os.replace(item, out / item.name)
    staging.rmdir()
    write_json_atomic(out / F.MANIFEST, manifest)
