"""``--quantization gguf``: a GGUF model's Q4_0 / Q4_1 / Q8_0 / Q4_K / Q6_K linear weights stay quantized.

The core loads a GGUF file dequantized (16/32-bit floats). On the cpu platform with its C
kernels, ``GGUFQuantExtension`` (a runner extension, made right after the load, before the
profiling run and the graph capture) re-reads each linear layer's blocks from the file
(``GGUFWeight.raw_rows``, memory-mapped), packs them (``vllm_cpu.quant``) and attaches them to
the layer's weight; ``CPUOps.linear`` then runs ``vc_linear_q`` (AVX512-VNNI int8 dot products,
activations quantized per block of 32 as llama.cpp does) and the dense weight is dropped. A
fused layer (q/k/v, gate/up) keeps one packed part per run of parts of one type. Layers with a
part of another type (F32, F16, Q5_K, Q2_K, ...) keep the dequantized weight. A tied LM head
(the embedding) gets a packed copy for the logits and keeps its dense rows for the lookups.

``quantization``: ``auto`` (default) is ``gguf`` for ``.gguf`` files on the cpu platform with
its kernels and a float32 / bfloat16 model, else ``none``; ``gguf`` asks for it (an error where
it cannot run); ``none`` is the dequantized path of before. One tensor-parallel rank only.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from vllm_core.plugins.api import (
    ConfigError,
    GGUFWeight,
    PluginConfig,
    RunnerContext,
    RunnerExtension,
    iter_gguf_lazy_weights,
)
from vllm_cpu.quant import QTYPES, QuantWeight, attach, build_quant_weight, quantized

logger = logging.getLogger(__name__)


class QuantizationConfig(PluginConfig):
    """Weight quantization on the cpu platform: ``LLM(model.gguf, quantization="none")``."""

    name: ClassVar[str] = "cpu_quantization"

    quantization: Literal["auto", "gguf", "none"] = "auto"
    """``gguf``: keep a GGUF file's Q4_0/Q4_1/Q8_0 linear weights packed and compute on them
    (cpu platform, AVX512-VNNI); ``none``: dequantize them at load; ``auto``: ``gguf`` for
    .gguf files on the cpu platform, else ``none``."""


def _why_not(context: RunnerContext) -> str | None:
    """Why the quantized path cannot run for this engine (None: it can)."""
    path = context.model_path or ""
    if not path.endswith(".gguf"):
        return f"the model {path!r} is not a .gguf file"
    platform = context.platform
    if platform is None or platform.name != "cpu":
        return f"the platform is {getattr(platform, 'name', None)!r}, not cpu"
    if getattr(platform.ops, "lib", None) is None:
        from vllm_cpu.kernels import unavailable_reason

        return f"the vllm-cpu C kernels are not loaded ({unavailable_reason() or 'off'})"
    if context.config.parallel.tensor_parallel_size > 1:
        return "tensor parallelism shards the weights (one rank only)"
    if context.model is None:
        return "the runner holds no model"
    dtype = next(iter(context.model.parameters())).dtype
    if dtype not in (torch.float32, torch.bfloat16):
        return f"the model dtype is {dtype}; the kernel takes float32 and bfloat16"
    return None


def _targets(model: Any, name: str) -> tuple[str, int | None]:
    """The module of checkpoint weight ``name`` and its shard (the model's ``stacked_params``)."""
    for fused, part, idx in getattr(model, "stacked_params", ()):
        if part in name:
            return name.replace(part, fused).rsplit(".", 1)[0], idx
    return name.rsplit(".", 1)[0], None


def quantize_model(model: Any, path: str, lib: object | None = None) -> dict[str, QuantWeight]:
    """Attach packed GGUF blocks to every linear layer of ``model`` whose parts are all of a
    packed type; drop those layers' dense weights (the tied embedding keeps its own).
    Returns the packed weights by module name. ``lib``: the kernels' library (packs in C)."""
    modules = dict(model.named_modules())
    tied_head = bool(getattr(model, "tie_word_embeddings", False)) and getattr(model, "lm_head", None) is None
    groups: dict[str, list[tuple[int, GGUFWeight]]] = {}
    for name, weight in iter_gguf_lazy_weights(path, torch.float32):
        if not name.endswith(".weight") or len(weight.shape) != 2 or not isinstance(weight, GGUFWeight):
            continue
        if name == "model.embed_tokens.weight":
            if not tied_head:
                continue
        elif name == "lm_head.weight" and tied_head:
            continue
        module_name, shard = _targets(model, name)
        if module_name in modules:
            groups.setdefault(module_name, []).append((shard or 0, weight))
    packed: dict[str, QuantWeight] = {}
    for module_name, parts in groups.items():
        module = modules[module_name]
        dense = getattr(module, "weight", None)
        if not isinstance(dense, torch.Tensor) or dense.dim() != 2:
            continue
        parts.sort(key=lambda p: p[0])
        types = [w.gguf_type for _, w in parts]
        n, k = dense.shape
        if any(t not in QTYPES for t in types) or sum(w.shape[0] for _, w in parts) != n or k % 32 or (
            any(t in ("Q4_K", "Q6_K") for t in types) and k % 256
        ):
            logger.debug("%s stays dequantized (GGUF types %s)", module_name, types)
            continue
        if module_name != "model.embed_tokens" and not isinstance(module._parameters.get("weight"), torch.Tensor):
            # a wrapper (e.g. a LoRA layer made before this extension) exposes another module's
            # weight: leave it dense rather than replace what the wrapper reads
            logger.debug("%s stays dequantized: its weight is not its own parameter", module_name)
            continue
        qw = build_quant_weight([(w.gguf_type, np.asarray(w.raw_rows())) for _, w in parts], k, lib)
        if module_name == "model.embed_tokens":
            attach(dense, qw)  # the logits run on the blocks; lookups keep the dense rows
        else:
            stub = torch.nn.Parameter(torch.zeros((), dtype=dense.dtype).expand(n, k), requires_grad=False)
            attach(stub, qw)
            module.weight = stub
        packed[module_name] = qw
    return packed


def weight_bytes(model: Any) -> int:
    """Bytes of the model's weights as held: each parameter storage once, plus packed blocks."""
    seen: dict[int, int] = {}
    extra = 0
    for p in model.parameters():
        st = p.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        qw = quantized(p)
        if qw is not None:
            extra += qw.nbytes
    return sum(seen.values()) + extra


class GGUFQuantExtension(RunnerExtension):
    """Packs the model's GGUF linear weights when it is made (see the module docstring)."""

    name: ClassVar[str] = "cpu-gguf-quantization"

    def __init__(self, packed: dict[str, QuantWeight], bytes_held: int) -> None:
        self.packed = packed
        self.bytes_held = bytes_held

    @classmethod
    def create(cls, context: RunnerContext) -> GGUFQuantExtension | None:
        section = context.config.plugin_config(QuantizationConfig)
        mode = section.quantization if section is not None else "auto"
        if mode == "none":
            return None
        why = _why_not(context)
        if why is not None:
            if mode == "gguf":
                raise ConfigError(
                    f"quantization='gguf' cannot run: {why}; use a .gguf model on the cpu platform "
                    "(vllm-cpu's kernels, float32 or bfloat16, one tensor-parallel rank) or quantization='none'"
                )
            return None
        assert context.model is not None and context.model_path is not None and context.platform is not None
        before = weight_bytes(context.model)
        packed = quantize_model(context.model, context.model_path, getattr(context.platform.ops, "lib", None))
        after = weight_bytes(context.model)
        types: dict[str, int] = {}
        for qw in packed.values():
            for t in qw.qtypes:
                types[t] = types.get(t, 0) + 1
        logger.info(
            "GGUF quantized weights: %d layers kept packed (%s); weights %.1f MiB (dequantized: %.1f MiB)",
            len(packed), ", ".join(f"{n} {t}" for t, n in sorted(types.items())) or "none",
            after / 2**20, before / 2**20,
        )
        return cls(packed, after) if packed else None
