"""`maxact pca --site SITE --components N --out FILE.npy`: the principal directions of a site over a
corpus (pipeline/pca.py), written as the (N, d) rows that ``--directions NAME=FILE.npy@SITE`` reads,
with FILE.json beside them (docs/PCA.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from maxact.config import AtlasConfig
from maxact.corpus import open_corpus, tokenize_corpus
from maxact.errors import MaxactError
from maxact.fsio import check_writable_file
from maxact.models.loading import load_model
from maxact.pipeline.pca import description_path, run_pca, write_pca
from maxact.units import SiteRef, site_kind

_SITE_RE = re.compile(r"(?:L(?P<layer>[0-9]+)\.)?(?P<site>[A-Za-z][A-Za-z0-9_-]*)", re.ASCII)


@dataclass(frozen=True)
class PcaRequest:
    """What `maxact pca` was asked (the CLI's options)."""

    site: str  # L{block}.{site}, or a site without blocks such as ln_final
    components: int
    out: Path  # FILE.npy; FILE.json is written beside it
    model: str
    corpus: str
    seq: int
    max_tokens: int | None
    bos: bool | None  # None: as an atlas of this corpus would feed it
    text_column: str
    skip_empty: bool
    strip_gutenberg: bool
    overwrite: bool
    as_json: bool
    device: str
    trust_remote_code: bool = False


def parse_site_ref(text: str, option: str = "--site") -> SiteRef:
    """``L6.resid_pre`` or ``ln_final`` -> SiteRef, the site name checked against the site table."""
    m = _SITE_RE.fullmatch(text.strip())
    if not m:
        raise MaxactError(f"{option} {text!r} is not a site; write L{{block}}.{{site}} such as L6.resid_pre, "
                          f"or ln_final")
    kind = site_kind(m["site"])
    if kind.has_block and m["layer"] is None:
        raise MaxactError(f"{option} {text!r}: site {kind.name!r} needs a block, e.g. L6.{kind.name}")
    if not kind.has_block and m["layer"] is not None:
        raise MaxactError(f"{option} {text!r}: site {kind.name!r} has no block; write {kind.name}")
    return SiteRef(kind.name, None if m["layer"] is None else int(m["layer"]))


def check_outputs(out: Path, overwrite: bool) -> Path:
    """Refuse, before any work, an --out that is not a writable FILE.npy, or whose FILE.npy or
    FILE.json exists (without --overwrite). Returns FILE.json."""
    out = Path(out)
    if out.suffix != ".npy":
        raise MaxactError(f"--out {out} must name a .npy file (the directions --directions reads), e.g. "
                          f"{out.with_suffix('.npy').name}")
    check_writable_file(out, "--out")
    described = description_path(out)
    existing = [p for p in (out, described) if p.exists()]
    if existing and not overwrite:
        raise MaxactError(f"--out {out}: {' and '.join(str(p) for p in existing)} already exist(s); "
                          f"add --overwrite to replace, or choose another --out")
    return described


def run_pca_command(req: PcaRequest, echo: Callable) -> None:
    """`maxact pca`: checks, the pass, the files, then a table (or --json) of what was written.
    echo(message, err=False) reports."""
    ref = parse_site_ref(req.site)
    if req.components < 1:
        raise MaxactError(f"--components must be at least 1, got {req.components}")
    described = check_outputs(req.out, req.overwrite)
    corpus = open_corpus(req.corpus, strip_gutenberg=req.strip_gutenberg, text_column=req.text_column,
                         skip_empty=req.skip_empty)  # fail fast, before the model
    echo(f"loading {req.model} ...", err=True)
    lm = load_model(req.model, device=req.device, trust_remote_code=req.trust_remote_code)
    width = lm.adapter.width(ref)  # an unknown site or block fails here
    if req.components > width:
        raise MaxactError(f"--components {req.components} is more than the {width} dimensions of {ref.name}; "
                          f"choose 1..{width}")
    source = tokenize_corpus(corpus, lm.tokenizer, req.max_tokens)
    config = AtlasConfig(model=req.model, corpus=req.corpus, seq=req.seq, sites=(ref.site,),
                         layers=None if ref.layer is None else (ref.layer,), max_tokens=req.max_tokens,
                         strip_gutenberg=req.strip_gutenberg, text_column=req.text_column,
                         skip_empty=req.skip_empty, bos=req.bos, device=req.device)
    result = run_pca(lm, source, config, ref, req.components)
    write_pca(result, req.out)
    if req.as_json:
        echo(json.dumps(result.to_json(Path(req.out).name)))
        return
    c = result.components
    echo(f"{ref.name}: {req.components} principal components of {width} dimensions from {result.n_tokens} tokens "
         f"of {result.corpus.name} ({result.seconds:.1f} s)")
    echo(f"{'component':>9}  {'variance':>12}  {'ratio':>8}  {'cumulative':>10}")
    for i, (v, r, cum) in enumerate(zip(c.explained_variance, c.explained_variance_ratio,
                                        c.explained_variance_ratio.cumsum())):
        echo(f"{i:>9}  {v:>12.6g}  {r:>8.4f}  {cum:>10.4f}")
    echo(f"wrote {req.out} ({req.components}, {width}) float32 and {described}; units NAME:i are raw dot "
         f"products dot(x, row i), not centred (the mean is in the JSON)")
