"""Independent reference computations for the numbers an atlas derives per unit.

Everything here is written from the documents (docs/METHOD.md, docs/STORE.md, the docstring of
analysis/overview.py), not from the code under test: it reads an atlas only as files on disk
(``manifest.json``, ``tokens.npy``) and recomputes every derived number from the raw activations of
a tiny model, taken with a plain ``transformers`` forward pass (``output_hidden_states``).

- ``AtlasCase``: a tiny model of one family saved to a folder, a skewed word corpus, and an atlas
  built from them through the CLI (sites ``resid_pre`` of every block and ``ln_final``, which are
  exactly ``hidden_states[L]`` and ``hidden_states[-1]``).
- ``Expected``: the brute-force top-K lists, the reference statistic (win probabilities by counting
  covering starts), token shares, position-0 shares, tuning means and z-scores, selectivity score
  and criteria, histogram bins (from the value's magnitude) and the seeded reference simulation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from atlas_helpers import run_cli, save_tiny_folder, single_thread
from tiny_models import VOCAB

SEQ = 16  # the atlas's window length
K = 8  # top-K / bottom-K kept per unit
MAX_TYPES = 40  # tracked token types for tuning
REF_BATCH = 24  # the reference geometry's batch (not the default 32, so batch and samples differ)
REF_SAMPLES = 150
REF_SEED = 7
N_TOKENS = 630  # 39 windows of 16 and a short last one of 6

# analysis/overview.py docstring: selective = z > 3 and share > 0.5 and pos0_share < 0.5
SELECTIVE_Z, SELECTIVE_SHARE, POS0_LIMIT, Z_CLIP = 3.0, 0.5, 0.5, 10.0


# ---- histogram bins, from the layout of docs/STORE.md ---------------------------------------
N_MAG = 47  # per sign: exact zero, underflow (0, 2**-10), 44 half-octaves 2**-10 .. 2**12, overflow
N_BINS = 2 * N_MAG


def magnitude_bin(a: float) -> int:
    """Bin of |x| within one sign: 0 exact zero, 1 underflow, 2.. half-octaves, 46 overflow."""
    if a == 0.0:
        return 0
    if a < 2.0**-10:
        return 1
    if a >= 2.0**12:  # infinities too
        return N_MAG - 1
    e = math.floor(math.log2(a))
    while 2.0**e > a:  # guard against log2 rounding at exact powers of two
        e -= 1
    while 2.0 ** (e + 1) <= a:
        e += 1
    return 2 + 2 * (e + 10) + (1 if a >= 1.5 * 2.0**e else 0)


def expected_bin(x: float) -> int:
    """Bins 0..46 negative (most negative first, -0.0 last), 47..93 positive (+0.0 first)."""
    m = magnitude_bin(abs(float(x)))
    return N_MAG - 1 - m if math.copysign(1.0, x) < 0 else N_MAG + m


def expected_bounds() -> np.ndarray:
    """(94, 2) [low, high) of each bin; exact-zero bins [0, 0]."""
    mag = [(0.0, 0.0), (0.0, 2.0**-10)]
    for e in range(-10, 12):
        mag += [(2.0**e, 1.5 * 2.0**e), (1.5 * 2.0**e, 2.0 ** (e + 1))]
    mag.append((2.0**12, math.inf))
    neg = [(-hi, -lo) for lo, hi in reversed(mag)]
    return np.array(neg + mag)


def histogram(values: np.ndarray) -> np.ndarray:
    """(n, U) float32 -> (U, 94) counts with ``expected_bin``."""
    out = np.zeros((values.shape[1], N_BINS), dtype=np.int64)
    for u in range(values.shape[1]):
        for x in values[:, u].tolist():
            out[u, expected_bin(x)] += 1
    return out


# ---- a tiny model, a corpus and an atlas made through the CLI --------------------------------
def skewed_tokens(n: int, seed: int) -> np.ndarray:
    """(n,) ids in 1..VOCAB-1 drawn with Zipf weights: a few frequent types, many rare ones."""
    ids = np.arange(1, VOCAB)
    w = 1.0 / ids**1.1
    return np.random.default_rng(seed).choice(ids, size=n, p=w / w.sum()).astype(np.int32)


def cli_ok(*args):
    with single_thread():
        result = run_cli(*args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


@dataclass
class AtlasCase:
    family: str
    folder: Path  # the saved model and tokenizer
    atlas: Path  # the atlas directory
    tokens: np.ndarray  # (n,) int32 corpus tokens
    manifest: dict  # manifest.json as written on disk
    acts: np.ndarray  # (n, U) float32 activations of every unit, in manifest order

    def run(self, *args):
        return cli_ok(*args)

    def show(self, unit: str) -> dict:
        return json.loads(self.run("show", self.atlas, unit, "--json").stdout)

    def find(self, token: str, *more) -> dict:
        return json.loads(self.run("find", self.atlas, "--token", token, "--json", *more).stdout)

    def unit_name(self, row: int) -> str:
        for s in self.manifest["sites"]:
            if s["offset"] <= row < s["offset"] + s["width"]:
                return f"{s['name']}:{row - s['offset']}"
        raise IndexError(row)

    def row_of(self, unit: str) -> int:
        name, index = unit.rsplit(":", 1)
        site = next(s for s in self.manifest["sites"] if s["name"] == name)
        assert 0 <= int(index) < site["width"], unit
        return site["offset"] + int(index)


def make_case(root: Path, family: str, seed: int = 0) -> AtlasCase:
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(save_tiny_folder(root / "model", family, seed))
    tokens = skewed_tokens(N_TOKENS, seed=11)
    corpus = root / "corpus.txt"
    corpus.write_text(" ".join(f"w{t}" for t in tokens) + "\n", encoding="utf-8")
    out = root / "atlas"
    cli_ok("atlas", "--model", folder, "--corpus", corpus, "--out", out, "--seq", SEQ, "--k", K,
           "--sites", "resid_pre,ln_final", "--windows-per-batch", 3, "--max-types", MAX_TYPES,
           "--ref-batch", REF_BATCH, "--ref-samples", REF_SAMPLES, "--seed", REF_SEED)
    manifest = json.loads((out / "manifest.json").read_text())
    stored = np.load(out / "tokens.npy")
    np.testing.assert_array_equal(stored, tokens)  # one word, one token
    return AtlasCase(family, folder, out, tokens, manifest, hidden_state_acts(folder, tokens, manifest))


def hidden_state_acts(folder: Path, tokens: np.ndarray, manifest: dict) -> np.ndarray:
    """(n, U) float32: consecutive non-overlapping windows of ``seq`` (the last one short), one
    plain forward each; resid_pre of block L is hidden_states[L], ln_final hidden_states[-1]."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder).float().eval()
    seq = manifest["seq"]
    windows = []
    with single_thread(), torch.no_grad():
        for s in range(0, len(tokens), seq):
            ids = torch.from_numpy(tokens[s : s + seq].astype(np.int64))[None]  # (1, T)
            hs = model(ids, output_hidden_states=True).hidden_states
            windows.append([h[0].numpy() for h in hs])  # each (T, d_model)
    cols = []
    for site in manifest["sites"]:
        assert site["site"] in ("resid_pre", "ln_final"), site
        index = site["layer"] if site["site"] == "resid_pre" else -1
        cols.append(np.concatenate([w[index] for w in windows]))  # (n, width)
        assert cols[-1].shape[1] == site["width"] and site["offset"] == sum(c.shape[1] for c in cols[:-1])
    return np.ascontiguousarray(np.concatenate(cols, axis=1), dtype=np.float32)


# ---- the reference statistic, by counting covering starts --------------------------------
def best_rank_per_start(positions: np.ndarray, n: int, seq: int) -> np.ndarray:
    """(n - seq,) the best rank among ``positions`` (K,) that window [s, s + seq) covers; K: none."""
    s = np.arange(n - seq)[:, None]
    p = positions[None, :]
    covers = (p >= 0) & (s <= p) & (p < s + seq)  # (n_starts, K)
    return np.where(covers.any(1), covers.argmax(1), len(positions))


def win_probabilities(positions: np.ndarray, n: int, seq: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(U, K) P(batch won by rank k), (U,) P(no rank covered): with C_k the starts covering one of
    the first k+1 positions, P(none of them in a batch) = (1 - C_k / n_starts) ** batch."""
    n_starts = n - seq
    U, KK = positions.shape
    probs, miss = np.zeros((U, KK)), np.zeros(U)
    for u in range(U):
        best = best_rank_per_start(positions[u], n, seq)
        C = np.array([(best <= k).sum() for k in range(KK)], dtype=np.float64)
        none = (1.0 - C / n_starts) ** batch
        probs[u] = np.concatenate([[1.0], none[:-1]]) - none
        miss[u] = none[-1]
    return probs, miss


def token_share_table(probs: np.ndarray, token_ids: np.ndarray) -> dict[int, float]:
    """One unit: token id -> summed win probability of its positions."""
    out: dict[int, float] = {}
    for p, t in zip(probs.tolist(), token_ids.tolist()):
        if t >= 0 and p > 0:
            out[int(t)] = out.get(int(t), 0.0) + p
    return out


def top_of(shares: dict[int, float]) -> tuple[int, float, float]:
    """(most probable token, its share, the runner-up's share); ties go to the smaller id."""
    ranked = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
    if not ranked:
        return -1, 0.0, 0.0
    return ranked[0][0], ranked[0][1], ranked[1][1] if len(ranked) > 1 else 0.0


def seeded_starts(n: int, seq: int, batch: int, samples: int, seed: int) -> np.ndarray:
    """docs/METHOD.md: numpy.random.default_rng(seed), one draw of ``batch`` starts per batch,
    uniform with replacement on [0, n - seq)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n - seq, size=batch) for _ in range(samples)])


@dataclass
class Winner:
    rank: int  # -1: no ranked position covered
    row: int  # first window of the batch holding it
    position: int  # corpus position (-1: none)


def simulate_winners(positions: np.ndarray, starts: np.ndarray, seq: int) -> list[Winner]:
    """Each batch (row of ``starts``) is won by the best-ranked position some window covers; its
    window is the first one covering it. Scans every window and every rank."""
    out = []
    for batch in starts:
        best, row = len(positions), -1
        for w, s in enumerate(batch.tolist()):
            for k, p in enumerate(positions.tolist()):
                if p >= 0 and s <= p < s + seq and k < best:
                    best, row = k, w
        out.append(Winner(best, row, int(positions[best])) if best < len(positions) else Winner(-1, -1, -1))
    return out


@dataclass
class SampledUnit:
    """One unit of a ``sample --json`` file."""

    unit: str
    starts: list[list[int]]  # (samples, batch)
    winners: list[dict | None]  # (samples,) {"row", "col", "token_id", "value"} or None
    tally: list[dict]
    distinct: int
    pos0_wins: int


def sampled_units(doc) -> list[SampledUnit]:
    """The units of a ``sample --json`` document: ``{"config", "starts", "units": [{"unit",
    "winners", ...}]}`` (README)."""
    return [SampledUnit(u["unit"], doc["starts"], u["winners"], u["tally"], u["distinct"], u["pos0_wins"])
            for u in doc["units"]]


# ---- everything a unit's page, find, the overview and the export derive ------------------------
class Expected:
    """Brute force over the raw activations of one AtlasCase."""

    def __init__(self, case: AtlasCase):
        m = case.manifest
        self.case = case
        self.tokens = case.tokens.astype(np.int64)
        self.n = len(self.tokens)
        self.seq = m["seq"]
        self.ref_batch, self.ref_seq = m["reference"]["batch"], m["reference"]["seq"]
        self.ref_samples, self.ref_seed = m["reference"]["samples"], m["reference"]["seed"]
        self.min_count = m["min_tuning_count"]
        x = case.acts
        self.U = x.shape[1]
        pos = np.arange(self.n)
        self.at0 = pos % self.seq == 0  # window position 0 of the atlas pass
        self.top, self.top_pos = self.ranked(~self.at0, True)
        self.bottom, self.bottom_pos = self.ranked(~self.at0, False)
        self.top0, self.top0_pos = self.ranked(self.at0, True)
        self.bottom0, self.bottom0_pos = self.ranked(self.at0, False)
        self.all_top, self.all_pos = self.ranked(np.ones(self.n, bool), True)

        # statistics over every token, in float64
        x64 = x.astype(np.float64)
        self.mean, self.std = x64.mean(0), x64.std(0)

        # the reference statistic over all positions, and with window position 0 excluded
        self.probs, self.miss = win_probabilities(self.all_pos, self.n, self.ref_seq, self.ref_batch)
        self.xprobs, self.xmiss = win_probabilities(self.top_pos, self.n, self.ref_seq, self.ref_batch)
        self.shares = [token_share_table(p, self.tokens[q]) for p, q in zip(self.probs, self.all_pos)]
        self.xshares = [token_share_table(p, self.tokens[q]) for p, q in zip(self.xprobs, self.top_pos)]
        tops = [top_of(s) for s in self.shares]
        self.top_token = np.array([t for t, _, _ in tops])
        self.top_share = np.array([s for _, s, _ in tops])
        self.top_gap = np.array([s - r for _, s, r in tops])  # margin to the runner-up token
        xtops = [top_of(s) for s in self.xshares]
        self.x_top_token = np.array([t for t, _, _ in xtops])
        self.x_top_share = np.array([s for _, s, _ in xtops])
        self.x_top_gap = np.array([s - r for _, s, r in xtops])
        at0_ranked = self.all_pos % self.seq == 0
        self.pos0_share = (self.probs * at0_ranked).sum(1) / (1.0 - self.miss)

        # token tuning: the MAX_TYPES most frequent types (ties: smaller id), mean per type
        self.occ = np.bincount(self.tokens, minlength=VOCAB)
        order = sorted(range(VOCAB), key=lambda t: (-self.occ[t], t))
        self.tracked = np.array(order[: min(MAX_TYPES, int((self.occ > 0).sum()))])
        self.tracked_counts = self.occ[self.tracked]
        self.type_means = np.stack([x64[self.tokens == t].mean(0) for t in self.tracked])  # (V, U)
        other = ~np.isin(self.tokens, self.tracked)
        self.other_mean = x64[other].mean(0) if other.any() else np.full(self.U, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (self.type_means - self.mean) / np.where(self.std > 0, self.std, np.nan)
        z[self.tracked_counts < self.min_count] = np.nan
        self.z = z  # (V, U)
        row = {int(t): i for i, t in enumerate(self.tracked)}
        self.top_token_z = np.array([z[row[t], u] if t in row else np.nan
                                     for u, t in enumerate(self.top_token.tolist())])
        self.top_token_lift = self.top_share / (self.occ[self.top_token] / self.n)
        zz = np.where(np.isnan(z), -np.inf, z)
        best = zz.argmax(0)
        self.best_token, self.best_z = self.tracked[best], z[best, np.arange(self.U)]
        self.best_gap = np.sort(zz, 0)[-1] - np.sort(zz, 0)[-2]

        # selectivity (analysis/overview.py docstring)
        z0 = np.nan_to_num(self.top_token_z, nan=0.0)
        self.clean = self.pos0_share < POS0_LIMIT
        self.selective = (z0 > SELECTIVE_Z) & (self.top_share > SELECTIVE_SHARE) & self.clean
        self.score = self.top_share * (1.0 - self.pos0_share) * np.clip(z0, 0.0, Z_CLIP)
        self.score[self.occ[self.top_token] < self.min_count] = 0.0

        # histogram: every token at a corpus position that is a multiple of the stride
        self.hist = histogram(x[pos % m["hist_stride"] == 0])

        # the seeded simulation of the reference geometry (what `show` tallies)
        self.ref_starts = seeded_starts(self.n, self.ref_seq, self.ref_batch, self.ref_samples, self.ref_seed)

    def ranked(self, keep: np.ndarray, largest: bool) -> tuple[np.ndarray, np.ndarray]:
        """(U, K) values and positions among the kept positions, by value (desc if largest),
        ties by earlier position."""
        pos = np.nonzero(keep)[0]
        vals, poss = np.zeros((self.U, K), np.float32), np.zeros((self.U, K), np.int64)
        for u in range(self.U):
            v = self.case.acts[pos, u].astype(np.float64)
            order = np.lexsort((pos, -v if largest else v))[:K]  # last key is the primary one
            vals[u], poss[u] = v[order], pos[order]
        return vals, poss

    def simulated_tally(self, u: int) -> tuple[dict[int, int], int, int]:
        """(winning token -> wins, missed batches, wins at window position 0) of the seeded
        reference simulation of unit ``u``."""
        counts: dict[int, int] = {}
        missed = pos0 = 0
        for w in simulate_winners(self.all_pos[u], self.ref_starts, self.ref_seq):
            if w.rank < 0:
                missed += 1
                continue
            t = int(self.tokens[w.position])
            counts[t] = counts.get(t, 0) + 1
            pos0 += int(w.position % self.seq == 0)
        return counts, missed, pos0

    def window_of(self, p: int) -> tuple[int, int]:
        """[first, last + 1) corpus positions of the atlas window holding ``p``."""
        w0 = p - p % self.seq
        return w0, min(w0 + self.seq, self.n)


def interesting_units(e: Expected, n: int = 10) -> list[int]:
    """Rows that exercise different branches: wins at position 0 or not, selective or not, the
    top token rare or tracked, the highest score; at most ``n``, distinct, sorted."""
    picks = [int(np.argmax(e.score)), int(np.argmax(e.pos0_share)), int(np.argmin(e.pos0_share)),
             int(np.argmax(np.nan_to_num(e.top_token_z, nan=-np.inf))),
             int(np.argmax((e.pos0_share > 0.05) & (e.pos0_share < 0.95))),
             int(np.argmax(e.occ[e.top_token] < e.min_count)), 0, e.U - 1]
    if e.selective.any():
        picks.append(int(np.nonzero(e.selective)[0][0]))
    picks += np.random.default_rng(3).choice(e.U, size=n, replace=False).tolist()
    return sorted(list(dict.fromkeys(picks))[:n])
