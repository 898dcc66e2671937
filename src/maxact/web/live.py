"""Live text: one unit's activation on every token of the user's text, the model run in the server.

The model loads on the first request (under a lock: concurrent first requests load it once) and
forward passes are serialised by the same lock. Tokenisation is the atlas's: no special tokens, no
BOS, ``tokenizer(text, add_special_tokens=False)``.
"""

from __future__ import annotations

import threading

from maxact.errors import MaxactError
from maxact.units import UnitId

MAX_TOKENS = 512  # longest input the live view runs
MAX_CHARS = 20_000  # refused before tokenising (512 tokens are far shorter than this)


class TooLong(MaxactError):
    """The input is over the live view's limit (HTTP 413)."""


class LiveModel:
    """A lazily loaded model (``name`` as `load_model` takes it, or an already loaded one)."""

    def __init__(self, name: str | None = None, loaded=None, derived=()):
        self.name = name if loaded is None else loaded.name
        self._lm = loaded
        self._lock = threading.Lock()
        self._derived = tuple(derived)  # the atlas's derived sites: their weights load with the model
        self._derived_ready = not self._derived

    @property
    def loaded(self) -> bool:
        return self._lm is not None

    def _get(self):
        # called with the lock held
        if self._lm is None:
            if not self.name:
                raise MaxactError("no model to run live text with: start the viewer with --model NAME")
            from maxact.models.loading import load_model

            self._lm = load_model(self.name)
            if self._lm.tokenizer is None:
                raise MaxactError(f"model {self.name!r} has no tokenizer; live text needs one")
        if not self._derived_ready:  # from the paths the atlas recorded, checked by hash
            from maxact.dictionaries import ensure_loaded

            ensure_loaded(self._derived)
            self._derived_ready = True
        return self._lm

    def with_model(self, fn):
        """fn(loaded model), run holding the model's lock (forward passes are serialised)."""
        with self._lock:
            return fn(self._get())

    def run(self, text: str, unit: UnitId) -> dict:
        """{"tokens", "token_ids", "values"} of ``unit`` on ``text``; MaxactError for a unit the
        model lacks, TooLong past the limits."""
        if len(text) > MAX_CHARS:
            raise TooLong(f"the text has {len(text)} characters; live text takes at most {MAX_TOKENS} tokens "
                          f"(about {MAX_CHARS} characters at most): shorten it")
        import torch

        from maxact.capture import capture
        from maxact.corpus import tokenize

        with self._lock:
            lm = self._get()
            ref = unit.site_ref
            lm.adapter.check_site(ref)
            lm.adapter.check_index(ref, unit.index)
            ids = tokenize(text, lm.tokenizer).tolist()
            if len(ids) > MAX_TOKENS:
                raise TooLong(f"the text has {len(ids)} tokens; live text runs at most {MAX_TOKENS}: shorten it")
            if not ids:
                raise MaxactError("the text has no tokens; type or paste some text")
            acts = capture(lm.adapter, torch.tensor([ids], dtype=torch.long, device=lm.device), [ref])[ref]
            values = acts[0, :, unit.index].float().cpu().tolist()  # (T,)
            tokens = lm.tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
        return {"tokens": tokens, "token_ids": ids, "values": values}
