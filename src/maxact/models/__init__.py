"""Loading models (hub id, local folder, GGUF file, embedded default) and their adapters."""

from maxact.models.loading import PRESETS, LoadedModel, load_model  # noqa: F401
