"""A tiny atlas for the viewer's tests, whose corpus carries markup that must stay inert.

A tiny random Llama (tests/tiny_models.py) is saved with ``save_pretrained`` beside a word-level
tokenizer that splits on whitespace only, so ``<script>alert(1)</script>`` is one token of the
vocabulary and shows up in contexts, tallies and token searches. The model folder is the atlas's
model name, so live text loads it offline in well under a second. Shared by
tests/unit/test_web.py and tests/e2e/test_viewer_browser.py.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tiny_models import VOCAB, tiny_model

INJECTIONS = ("<script>alert(1)</script>", "<img/src=x/onerror=alert(2)>", "&lt;b&gt;", '"quoted"')
WORDS = tuple(f"w{i}" for i in range(1, VOCAB - len(INJECTIONS)))


def save_tiny_model(folder: Path) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0}
    for t in INJECTIONS + WORDS:
        vocab[t] = len(vocab)
    assert len(vocab) <= VOCAB
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    tiny_model("llama").save_pretrained(folder)
    return str(folder)


def corpus_text(n: int = 700, seed: int = 0) -> str:
    """Words with a skewed frequency, the injections among them often enough to be tracked."""
    rng = random.Random(seed)
    weights = [1.0 / (1 + i) ** 0.7 for i in range(len(WORDS))]
    out = []
    for i in range(n):
        if i % 23 == 5:
            out.append(INJECTIONS[(i // 23) % len(INJECTIONS)])
        else:
            out.append(rng.choices(WORDS, weights)[0])
    return " ".join(out) + "\n"


def build_viewer_atlas(root: Path, directions: int = 0) -> tuple[Path, str]:
    """(atlas dir, model folder) under root; ``directions`` > 0 adds a derived site ``dirs`` of that
    many seeded random directions of ``L1.resid_pre`` (docs/DIRECTIONS.md)."""
    from dataclasses import replace

    import numpy as np

    from maxact.config import AtlasConfig
    from maxact.corpus import load_corpus, tokenize_corpus
    from maxact.models.loading import load_model
    from maxact.pipeline import build_atlas

    model_dir = save_tiny_model(root / "tiny-llama")
    text_path = root / "markup-corpus.txt"
    text_path.write_text(corpus_text(), encoding="utf-8")
    lm = load_model(model_dir)
    source = tokenize_corpus(load_corpus(text_path), lm.tokenizer)
    config = AtlasConfig(model=model_dir, corpus=str(text_path), seq=32, k=8, k_ctx=4, max_types=64,
                         windows_per_batch=4, ref_batch=4, ref_samples=200, seed=0)
    if directions:
        from maxact.dictionaries import load_options

        np.save(root / "dirs.npy", np.random.default_rng(0).standard_normal((directions, lm.adapter.d_model)))
        spec = load_options((f"dirs={root / 'dirs.npy'}@L1.resid_pre",))[0]
        config = replace(config, sites=config.sites + ("dirs",), derived=(spec,))
    out = root / "atlas"
    build_atlas(lm, source, config, out, progress=False, echo=lambda m: None)
    return out, model_dir


def start_server(atlas_dir, model=None):
    """make_server on a free port of 127.0.0.1, served from a daemon thread: (server, url)."""
    from maxact.web.server import make_server

    server, url = make_server(atlas_dir, "127.0.0.1", 0, model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, url.rstrip("/")


def api_call(url: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """GET (or POST ``body`` as JSON) an API route of a started viewer: (status, parsed JSON answer);
    an error answer that is not JSON comes back as ``{"error": its text}``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"} if body is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            return e.code, json.loads(text)
        except json.JSONDecodeError:
            return e.code, {"error": text}


def wait_job(url: str, job: str, timeout: float) -> dict:
    """Poll ``/api/job/<job>`` until it leaves queued/running; its final state."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        status, state = api_call(url, f"/api/job/{job}")
        assert status == 200
        if state["state"] not in ("queued", "running"):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job} did not finish")
