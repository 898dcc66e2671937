"""Write an atlas directory atomically: arrays go to a staging folder, then into place, and the
manifest is written last (write, fsync, rename), so a directory without one is never mistaken for
a finished atlas and a finished atlas is never half-replaced."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from maxact.config import AtlasConfig
from maxact.errors import MaxactError
from maxact.fsio import fsync_write, fsynced_file, remove_leftovers, staging_path, write_json_atomic
from maxact.store import format as F
from maxact.store.manifest import FileInfo, Manifest


def write_atlas(out: Path, arrays: dict[str, np.ndarray], manifest: Manifest, config: AtlasConfig,
                vocab: list[str]) -> None:
    """Write ``arrays`` (store file name -> array), vocab.json, config.json and, last, the manifest
    with its ``files`` filled in from the arrays. Staging folders and temporary files that killed
    runs left in ``out`` are removed first; this write's own are removed on every error."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)
    staging = staging_path(out)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        files = {}
        for name, arr in arrays.items():
            with fsynced_file(staging / name) as f:
                np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
            files[name] = FileInfo(list(arr.shape), arr.dtype.str if arr.dtype.names is None else F.STRUCTURED_TAG)
        fsync_write(staging / F.VOCAB, json.dumps(vocab, ensure_ascii=False).encode())
        fsync_write(staging / F.CONFIG, json.dumps(config.to_json(), indent=1).encode())
        if (out / F.MANIFEST).exists():
            (out / F.MANIFEST).unlink()  # the old atlas stops being valid before any file changes
        for item in staging.iterdir():
            os.replace(item, out / item.name)
        staging.rmdir()
        write_json_atomic(out / F.MANIFEST, replace(manifest, files=files).to_json())
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        needed_mb = math.ceil(sum(a.nbytes for a in arrays.values()) / 1e6)
        raise MaxactError(f"no space left on {out} (needed about {needed_mb} MB); free some space and "
                          f"run again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
