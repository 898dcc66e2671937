"""Build the same atlases with an earlier revision and with this working tree, then compare every
``.npy`` byte for byte (the check of a refactor that must not change a number).

    .venv/bin/python benchmarks/compare_atlas_bytes.py --base ad53429 [--max-tokens 3072]

Each revision runs in its own interpreter with its own ``src`` first on ``sys.path`` (the base is
checked out with ``git worktree`` into a temporary folder), so both use the same installed
libraries. Three atlases per side: one run on the embedded model over the demo corpus, the same
as two shards merged, and a run over a second corpus with other options (``--k``, ``--seq``,
``--sites``, ``--layers``). Prints one line per file and a JSON summary; exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cli(src: Path, *args: str) -> None:
    code = "import sys; sys.argv[0] = 'maxact'; from maxact.cli import main; main()"
    env = {"PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-c", code, *args], check=True, env={**_environ(), **env},
                   stdout=subprocess.DEVNULL)


def _environ() -> dict:
    import os

    return dict(os.environ)


def build_all(src: Path, out: Path, max_tokens: int) -> None:
    mt = ["--max-tokens", str(max_tokens)]
    _cli(src, "atlas", "--out", str(out / "one"), *mt, "--windows-per-batch", "4")
    for i in range(2):
        _cli(src, "atlas", "--out", str(out / f"s{i}"), *mt, "--windows-per-batch", "4", "--shard", f"{i}/2")
    _cli(src, "merge", str(out / "s0"), str(out / "s1"), "--out", str(out / "merged"))
    _cli(src, "atlas", "--out", str(out / "other"), "--corpus", "wonderland", "--max-tokens", str(max_tokens),
         "--seq", "128", "--k", "16", "--sites", "mlp_pre,attn_q,resid_post", "--layers", "0-2,7",
         "--windows-per-batch", "8")


def compare(a: Path, b: Path) -> dict:
    rows = {"identical": [], "different": [], "only_base": [], "only_new": []}
    for name in ("one", "merged", "other"):
        fa = {p.name for p in (a / name).glob("*.npy")}
        fb = {p.name for p in (b / name).glob("*.npy")}
        for f in sorted(fa & fb):
            same = (a / name / f).read_bytes() == (b / name / f).read_bytes()
            rows["identical" if same else "different"].append(f"{name}/{f}")
        rows["only_base"] += [f"{name}/{f}" for f in sorted(fa - fb)]
        rows["only_new"] += [f"{name}/{f}" for f in sorted(fb - fa)]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="git revision to compare against")
    p.add_argument("--max-tokens", type=int, default=3072)
    p.add_argument("--keep", type=Path, default=None, help="keep the atlases in this folder")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="maxact-bytes-")) if args.keep is None else args.keep
    wt = work / "base-src"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(wt), args.base],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        build_all(wt / "src", work / "base", args.max_tokens)
        build_all(REPO / "src", work / "new", args.max_tokens)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(wt)], check=False)
    rows = compare(work / "base", work / "new")
    for k in ("different", "only_base", "only_new"):
        for f in rows[k]:
            print(f"{k:<10} {f}")
    summary = {k: len(v) for k, v in rows.items()} | {"base": args.base, "max_tokens": args.max_tokens,
                                                       "atlases": str(work)}
    print(json.dumps(summary))
    sys.exit(1 if rows["different"] or rows["only_base"] else 0)


if __name__ == "__main__":
    main()
