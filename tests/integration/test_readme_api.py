"""The README's Python API snippet, read out of README.md and run as written in a fresh interpreter
(only `samples=` made small), on the embedded model and a small atlas holding the unit it names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
MAXACT = str(Path(sys.executable).with_name("maxact"))


def readme_api_snippet() -> str:
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_api_snippet_runs_as_written(tmp_path, shared_corpora):
    code = readme_api_snippet()
    assert "maxact.sample(lm, corpus," in code and "samples=100" in code
    small = code.replace("samples=100", "samples=2")
    atlas_dir = re.search(r'Atlas\("([^"]+)"\)', code)[1]
    unit = re.search(r'unit_page\(atlas, "([^"]+)"\)', code)[1]
    layer, site = re.fullmatch(r"L(\d+)\.([\w-]+):\d+", unit).groups()
    # the atlas the snippet reads, in the folder it names: a small one that holds its unit
    build = subprocess.run(
        [MAXACT, "atlas", "--out", atlas_dir, "--sites", site, "--layers", layer, "--max-tokens", "1500",
         "--seq", "128"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    checks = ("\nimport pandas\n"
              "assert isinstance(df, pandas.DataFrame) and int(df['count'].sum()) == 2\n"
              f"assert page['unit'] == {unit!r}\n")
    proc = subprocess.run([sys.executable, "-c", small + checks], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "winners.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
