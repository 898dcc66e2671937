"""What each route of the viewer answers, as plain dicts, without HTTP (the server maps them).

Errors the user can fix raise ``HTTPError`` with a status and a plain message; every JSON twin is
the same object the CLI prints: ``/api/unit/<unit>`` is `maxact show --json`, ``/api/find`` is
`maxact find --json`.
"""

from __future__ import annotations

import math
import re
from functools import cached_property
from urllib.parse import quote, urlencode

import numpy as np

from maxact.analysis.overview import overview, site_units
from maxact.analysis.pages import find_units, unit_page
from maxact.config import ASCENT, CONTEXT_EXAMPLES
from maxact.errors import MaxactError
from maxact.store import format as F
from maxact.store.reader import Atlas
from maxact.units import UnitId, parse_unit
from maxact.web.jobs import Job, JobQueue, JobRefused
from maxact.web.live import MAX_TOKENS, LiveModel, TooLong

_UNIT_LIKE = re.compile(r"^(?:L[0-9]+\.)?[A-Za-z][A-Za-z0-9_-]*:[0-9]+$", re.ASCII)  # the grammar of unit ids
DEFAULT_LIVE_TEXT = "Alice looked before she leapt, and the Queen ran faster and faster."


class HTTPError(Exception):
    """A request the viewer cannot answer: ``status`` and a message for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def unit_url(unit: str) -> str:
    return "/unit/" + quote(unit, safe=":")


class Viewer:
    """One open atlas and, for live text, one lazily loaded model."""

    def __init__(self, atlas_dir, model=None):
        self.atlas = Atlas(atlas_dir)  # MaxactError for a missing or corrupt atlas
        derived = self.atlas.manifest.derived
        if model is None or isinstance(model, str):
            self.live_model = LiveModel(model or self.atlas.manifest.model.name, derived=derived)
        else:  # an already loaded model (tests)
            self.live_model = LiveModel(loaded=model, derived=derived)
        self.jobs = JobQueue(self.live_model.with_model)

    def warm(self) -> None:
        """Compute what every request shares (derived arrays, the overview, the first page's
        imports) before the first request, so no visitor waits for it."""
        _ = self.atlas.token_counts, self._token_index, self._tracked
        self.unit(self.default_unit())

    # ---- lookups ---------------------------------------------------------------------------
    @cached_property
    def _token_index(self) -> dict[str, int]:
        """Token text -> first id with that text."""
        index: dict[str, int] = {}
        for i, t in enumerate(self.atlas.vocab):
            index.setdefault(t, i)
        return index

    @cached_property
    def _tracked(self) -> set[int]:
        return set(np.asarray(self.atlas[F.TUNING_IDS]).tolist())

    @cached_property
    def _overview(self) -> dict:
        return overview(self.atlas)

    def check_unit(self, unit_text: str) -> UnitId:
        """The unit, or HTTPError 404 saying why it is not in this atlas."""
        try:
            unit = parse_unit(unit_text)
            self.atlas.row(unit)
        except MaxactError as e:
            raise HTTPError(404, str(e)) from None
        return unit

    def check_token(self, token: str) -> int:
        """The token's id if the atlas tracks it (what a token search needs), else HTTPError 404."""
        if not token:
            raise HTTPError(400, "give a token to search for, e.g. /find?token=%20before (tokens carry their leading space)")
        ids = self.atlas.find_token_ids(token)
        if not ids:
            raise HTTPError(404, f"token {token!r} is not in the vocabulary of {self.atlas.manifest.model.name}; "
                                 f"tokens carry their leading space, e.g. ' before'")
        hits = [i for i in ids if i in self._tracked]
        if not hits:
            n = int(self.atlas.token_counts[ids[0]])
            raise HTTPError(404, f"token {token!r} occurs {n} times in the corpus and is not among the "
                                 f"{len(self._tracked)} token types the atlas tracks, so no unit can be ranked for it")
        return hits[0]

    def site_exists(self, name: str) -> None:
        if self.atlas.manifest.site(name) is None:
            names = ", ".join(s.name for s in self.atlas.sites[:6])
            raise HTTPError(404, f"site {name!r} is not in this atlas; it holds {names}, ...")

    def default_unit(self) -> str:
        top = self._overview["top_units"]
        return top[0]["unit"] if top else str(self.atlas.unit_at(0))

    # ---- JSON routes -----------------------------------------------------------------------
    def overview(self) -> dict:
        return self._overview

    def unit(self, unit_text: str) -> dict:
        unit = self.check_unit(unit_text)
        return unit_page(self.atlas, str(unit))

    def find(self, token: str, limit: int = 20, site: str | None = None) -> dict:
        self.check_token(token)
        if not 1 <= limit <= 1000:
            raise HTTPError(400, f"limit must be 1..1000, got {limit}")
        try:
            return find_units(self.atlas, token, limit=limit, site=site)
        except MaxactError as e:  # a site kind the atlas lacks
            raise HTTPError(400, str(e)) from None

    def concept(self, tokens: list[str], site: str | None = None, top: int = 50) -> dict:
        """`/api/concept?token=...&token=...`: every unit against a category of tracked token types,
        from the atlas alone (`maxact concept ATLAS --token ...`, plus the volcano's points)."""
        from maxact.analysis.concept import concept_page

        if not tokens or not all(tokens):
            raise HTTPError(400, "give one or more tokens: /api/concept?token=%20not&token=%20never")
        if not 1 <= top <= 1000:
            raise HTTPError(400, f"top must be 1..1000, got {top}")
        try:
            page = concept_page(self.atlas, tokens, (site,) if site else None, top)
        except MaxactError as e:
            raise HTTPError(400, str(e)) from None
        return {**page, "probe_max_tokens": self.jobs.limits.max_probe_tokens}  # the probe job's cap

    def site(self, name: str, page: int = 1, per_page: int = 50) -> dict:
        self.site_exists(name)
        try:
            return site_units(self.atlas, name, page, per_page)
        except MaxactError as e:
            raise HTTPError(400, str(e)) from None

    def search(self, query: str) -> dict:
        """Where the search box goes: a unit id, a token of the vocab, or free text (live view)."""
        q = query.strip()
        if not q:
            raise HTTPError(400, "type a unit id (L2.resid_pre:345), a token ( before) or some text")
        if _UNIT_LIKE.match(q):
            return {"kind": "unit", "query": query, "unit": q, "url": unit_url(q)}
        site = q.removesuffix(":*")
        if self.atlas.manifest.site(site) is not None:
            return {"kind": "site", "query": query, "site": site, "url": "/site/" + quote(site)}
        candidates = list(dict.fromkeys([query, q, " " + q]))
        in_vocab = [t for t in candidates if t in self._token_index]
        tracked = [t for t in in_vocab if any(i in self._tracked for i in self.atlas.find_token_ids(t))]
        if tracked or in_vocab:
            token = (tracked or in_vocab)[0]
            return {"kind": "token", "query": query, "token": token, "url": "/find?" + urlencode({"token": token}, quote_via=quote)}
        return {"kind": "text", "query": query, "text": query,
                "url": "/live?" + urlencode({"text": query, "unit": self.default_unit()}, quote_via=quote)}

    def live(self, text, unit_text) -> dict:
        if not isinstance(text, str) or not text.strip():
            raise HTTPError(400, "give some text: POST {\"text\": \"...\", \"unit\": \"L2.resid_pre:345\"}")
        if not isinstance(unit_text, str):
            raise HTTPError(400, "give a unit id such as L2.resid_pre:345")
        try:
            unit = parse_unit(unit_text)
        except MaxactError as e:
            raise HTTPError(400, str(e)) from None
        try:
            out = self.live_model.run(text, unit)
        except TooLong as e:
            raise HTTPError(413, str(e)) from None
        except MaxactError as e:
            msg = str(e)
            status = 400 if self.live_model.loaded else 503
            raise HTTPError(status, msg) from None
        scale, in_atlas = self.colour_scale(unit)
        if scale is None:
            scale = max((abs(v) for v in out["values"]), default=1.0) or 1.0
        return {"unit": str(unit), **out, "scale": scale, "in_atlas": in_atlas,
                "model": self.live_model.name, "max_tokens": MAX_TOKENS}

    # ---- model jobs: the optimise and context panels -------------------------------------------
    def _job_unit(self, body: dict) -> UnitId:
        unit_text = body.get("unit")
        if not isinstance(unit_text, str):
            raise HTTPError(400, "give a unit id such as L2.resid_pre:345 in \"unit\"")
        try:
            return parse_unit(unit_text)
        except MaxactError as e:
            raise HTTPError(400, str(e)) from None

    def _submit(self, kind: str, describe: dict, run) -> dict:
        try:
            job = self.jobs.submit(kind, describe, run)
        except JobRefused as e:
            raise HTTPError(429, str(e)) from None
        return {"job": job.id, "url": f"/api/job/{job.id}", "state": job.state}

    def start_ascend(self, body: dict) -> dict:
        """POST /api/ascend {"unit", "method", "length", "steps", "seeds"}: `maxact ascend` as a job,
        its data side from this atlas."""
        from maxact.ascent.runs import METHODS

        unit = self._job_unit(body)
        limits = self.jobs.limits
        method = body.get("method", ASCENT.method)
        if method not in METHODS:
            raise HTTPError(400, f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
        sizes = {}
        for name, default, cap in (("length", ASCENT.length, limits.max_length), ("steps", ASCENT.steps, limits.max_steps),
                                   ("seeds", ASCENT.seeds, limits.max_seeds)):
            value = body.get(name, default)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= cap:
                raise HTTPError(400, f"{name} must be a whole number from 1 to {cap}, got {value!r}")
            sizes[name] = value
        data = self._data_reference(unit)

        def run(lm, should_stop, progress):
            from maxact.ascent.runs import ascend

            steps = {"n": 0}

            def stop() -> bool:
                steps["n"] += 1
                progress.update(done=steps["n"], of=sizes["steps"] * sizes["seeds"])
                return should_stop()

            return ascend(lm, unit, method, sizes["length"], sizes["steps"], list(range(sizes["seeds"])), data,
                          should_stop=stop).to_json()

        return self._submit("ascend", {"unit": str(unit), "method": method, **sizes}, run)

    def _data_reference(self, unit: UnitId):
        from maxact.ascent.runs import DataReference

        try:
            row = self.atlas.row(unit)
        except MaxactError:
            return None
        positions = [int(p) for p in np.asarray(self.atlas[F.TOP_POSITIONS][row]) if p >= 0]
        tokens = self.atlas.tokens
        top = list(dict.fromkeys(int(tokens[p]) for p in positions))[:10]
        return DataReference(float(self.atlas[F.STATS][row]["max"]), top,
                             f"this atlas: the maximum over every token of {self.atlas.manifest.corpus.name}, "
                             "top tokens of its best examples")

    def start_context(self, body: dict) -> dict:
        """POST /api/context {"unit", "examples"}: `maxact context` as a job."""
        unit = self._job_unit(body)
        try:
            self.atlas.row(unit)
        except MaxactError as e:
            raise HTTPError(404, str(e)) from None
        cap = self.jobs.limits.max_examples
        examples = body.get("examples", CONTEXT_EXAMPLES)
        if not isinstance(examples, int) or isinstance(examples, bool) or not 1 <= examples <= cap:
            raise HTTPError(400, f"examples must be a whole number from 1 to {cap}, got {examples!r}")

        def run(lm, should_stop, progress):
            from maxact.pipeline.context import context_curves

            return context_curves(lm, self.atlas, unit, examples).to_json()

        return self._submit("context", {"unit": str(unit), "examples": examples}, run)

    def start_concept_probe(self, body: dict) -> dict:
        """POST /api/concept/probe {"token": [...], "site", "tokens"}: `maxact concept ATLAS --token ...
        --sites KIND --layers N --probe --max-tokens TOKENS` as a job, over the first TOKENS tokens
        of the atlas's corpus (at most JOBS.max_probe_tokens)."""
        from maxact.analysis.categories import token_ids_for

        tokens = body.get("token")
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise HTTPError(400, "give the category's token texts as a list in \"token\", e.g. [\" not\", \" never\"]")
        try:
            token_ids_for(self.atlas.vocab, tokens)
        except MaxactError as e:
            raise HTTPError(400, str(e)) from None
        site = self.atlas.manifest.site(body.get("site")) if isinstance(body.get("site"), str) else None
        if site is None:
            names = ", ".join(s.name for s in self.atlas.sites[:4])
            raise HTTPError(400, f"give one site of this atlas in \"site\" (the probe reads all its units), e.g. "
                                 f"{names}; got {body.get('site')!r}")
        cap = self.jobs.limits.max_probe_tokens
        n_tokens = body.get("tokens", cap)
        if not isinstance(n_tokens, int) or isinstance(n_tokens, bool) or not 1 <= n_tokens <= cap:
            raise HTTPError(400, f"tokens must be a whole number from 1 to {cap}, got {n_tokens!r}")

        def run(lm, should_stop, progress):
            from maxact.commands.concept_cmd import probe_job

            return probe_job(lm, self.atlas, tuple(tokens), site.ref, n_tokens, should_stop, progress)

        return self._submit("concept-probe", {"token": tokens, "site": site.name, "tokens": n_tokens}, run)

    def job(self, job_id: str) -> dict:
        job = self.jobs.get(job_id)
        if job is None:
            raise HTTPError(404, f"no job {job_id!r} (finished jobs are forgotten after a while: start it again)")
        return job.to_json()

    def cancel_job(self, job_id: str) -> dict:
        job: Job | None = self.jobs.cancel(job_id)
        if job is None:
            raise HTTPError(404, f"no job {job_id!r}")
        return job.to_json()

    def colour_scale(self, unit: UnitId) -> tuple[float | None, bool]:
        """The unit's max |activation| away from window position 0 in the atlas (the scale the
        unit page shades with), or (None, False) when the atlas lacks the unit."""
        try:
            row = self.atlas.row(unit)
        except MaxactError:
            return None, False
        vals = [float(self.atlas[F.TOP_VALUES][row, 0]), float(self.atlas[F.BOTTOM_VALUES][row, 0])]
        vals = [abs(v) for v in vals if math.isfinite(v)]
        if not vals or max(vals) == 0:
            st = self.atlas[F.STATS][row]
            vals = [abs(float(st["min"])), abs(float(st["max"]))]
        scale = max(vals)
        return (scale if math.isfinite(scale) and scale > 0 else None), True
