"""Model loaders (``load_format``) and the code that builds a ready model from a ``ModelConfig``."""

from vllm_core.model_executor.model_loader.base import ModelLoader
from vllm_core.model_executor.model_loader.loader import LoadedModel, load_model, resolve_model_path

__all__ = ["LoadedModel", "ModelLoader", "load_model", "resolve_model_path"]
