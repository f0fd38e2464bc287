"""The seams features plug into: per-request extension state and runner extensions.

* ``RequestExtension`` / ``ExtensionState`` (``state``): a feature's typed per-request data,
  carried ``EngineCoreRequest`` -> ``Request`` -> ``ScheduledRequest`` -> the runner's rows,
  which may also add to the request's prefix-cache block hashes (``cache_salt``, an adapter's
  digest, image hashes).
* ``RunnerExtension`` (``runner``): per-step callbacks inside the model runner, registered
  through the ``register_runner_extensions`` hook (structured outputs, proposers for
  speculative decoding; LoRA slots and encoder caches later).
"""

from vllm_core.extensions.state import CacheSalt, ExtensionState, RequestExtension

__all__ = ["CacheSalt", "ExtensionState", "RequestExtension"]
