"""One thin adapter per model family; ``adapter_for`` picks it from ``config.model_type``."""

from __future__ import annotations

from maxact.errors import MaxactError, choices_text
from maxact.models.adapters.base import Adapter, SiteHook
from maxact.models.adapters.gemma import GemmaAdapter
from maxact.models.adapters.gemma2 import Gemma2Adapter
from maxact.models.adapters.gemma3 import Gemma3Adapter
from maxact.models.adapters.gpt2 import GPT2Adapter
from maxact.models.adapters.gpt_neo import GPTNeoAdapter
from maxact.models.adapters.gpt_neox import GPTNeoXAdapter
from maxact.models.adapters.llama import LlamaAdapter
from maxact.models.adapters.mistral import MistralAdapter
from maxact.models.adapters.olmo2 import Olmo2Adapter
from maxact.models.adapters.phi3 import Phi3Adapter
from maxact.models.adapters.qwen import QwenAdapter

# every family, once; a new family's adapter is added here (docs/DEVELOPING.md, "Add a model family")
ADAPTERS: list[type[Adapter]] = [
    LlamaAdapter, GPT2Adapter, GPTNeoAdapter, GPTNeoXAdapter, MistralAdapter, QwenAdapter, GemmaAdapter,
    Gemma2Adapter, Gemma3Adapter, Phi3Adapter, Olmo2Adapter,
]

__all__ = ["Adapter", "SiteHook", "adapter_for", "supported_model_types"]


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def adapter_for(model) -> Adapter:
    model_type = getattr(model.config, "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls(model)
    raise MaxactError(
        f"no adapter for model_type {model_type!r}; supported families: {choices_text(supported_model_types())}"
    )
