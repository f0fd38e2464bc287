"""The engine's error hierarchy.

Every error names what failed, the offending value, the valid choices and the fix.
Errors a caller can cause are also ``ValueError`` so code written against vLLM (which
raises ``ValueError``) keeps working.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error vllm-core raises on purpose."""


class ConfigError(EngineError, ValueError):
    """An engine setting is invalid (bad dtype, sizes that do not fit, unknown names)."""


class PluginError(EngineError):
    """A plugin failed to load or registered something invalid."""


class PlatformNotAvailableError(ConfigError):
    """The requested platform is not installed or cannot run on this machine."""


class ModelLoadError(EngineError, ValueError):
    """The model could not be found, read or mapped to a supported architecture."""


class RequestError(EngineError, ValueError):
    """A request is invalid: the engine rejects it and keeps serving other requests."""


class SamplingParamsError(RequestError):
    """A ``SamplingParams`` field holds an invalid value."""


class KVCacheTooSmallError(ConfigError):
    """The KV cache cannot hold even one sequence of the configured length."""


class WorkerError(EngineError):
    """A worker of a multi-process (``mp`` / ``ray``) engine died, failed or did not answer within
    ``distributed_timeout_s``: the engine stops its other workers and cannot go on."""
