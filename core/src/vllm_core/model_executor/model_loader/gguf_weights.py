"""Stream Hugging Face-named, dequantized weights out of a GGUF file.

GGUF files written by llama.cpp's ``convert_hf_to_gguf.py`` use llama.cpp
tensor names and layouts. This module turns them back into the parameter names
and layouts of the Hugging Face ``transformers`` implementation, one tensor at
a time (the file is memory-mapped by :class:`~.gguf_file.GGUFFile`; only the
tensor being converted is materialised).

Name map (``N`` is the decoder layer index)::

    token_embd.weight           -> model.embed_tokens.weight
    output_norm.weight          -> model.norm.weight
    output.weight               -> lm_head.weight   (absent when tied)
    blk.N.attn_norm.weight      -> model.layers.N.input_layernorm.weight
    blk.N.ffn_norm.weight       -> model.layers.N.post_attention_layernorm.weight
    blk.N.attn_q.{weight,bias}  -> model.layers.N.self_attn.q_proj.{weight,bias}
    blk.N.attn_k.{weight,bias}  -> model.layers.N.self_attn.k_proj.{weight,bias}
    blk.N.attn_v.{weight,bias}  -> model.layers.N.self_attn.v_proj.{weight,bias}
    blk.N.attn_output.{weight,bias} -> model.layers.N.self_attn.o_proj.{weight,bias}
    blk.N.attn_q_norm.weight    -> model.layers.N.self_attn.q_norm.weight   (qwen3)
    blk.N.attn_k_norm.weight    -> model.layers.N.self_attn.k_norm.weight   (qwen3)
    blk.N.ffn_gate.weight       -> model.layers.N.mlp.gate_proj.weight
    blk.N.ffn_up.weight         -> model.layers.N.mlp.up_proj.weight
    blk.N.ffn_down.weight       -> model.layers.N.mlp.down_proj.weight

``rope_freqs.weight`` (Llama 3.x rope scaling factors, which the HF model
recomputes from its config) is not a parameter and is skipped. Any other
tensor name raises :class:`ValueError`.

Shapes: GGUF records dimensions fastest-varying first, i.e. reversed relative
to PyTorch. A GGUF ``[in_features, out_features]`` matrix is therefore a
PyTorch ``(out_features, in_features)`` ``nn.Linear`` weight; the bytes are
already in that row-major order, so only the shape tuple is reversed.

Rope permutation (``llama`` architecture only, which llama.cpp also uses for
Mistral): HF Llama applies rotary embeddings with the "rotate half" layout
(the two halves of each head's dimension form the pairs), while llama.cpp uses
the interleaved GPT-J layout (adjacent elements form the pairs). The converter
therefore permutes the rows of ``q_proj`` (with ``n_head`` heads) and
``k_proj`` (with ``n_head_kv`` heads), weights and biases alike::

    w.reshape(n_head, 2, head_dim // 2, *rest).swapaxes(1, 2).reshape(w.shape)

and we undo it with the inverse permutation (as transformers does)::

    w.reshape(n_head, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)

``qwen2`` and ``qwen3`` are converted without this permutation (llama.cpp uses
the NEOX rope layout for them), so their tensors are used as stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from vllm_core.model_executor.model_loader.gguf_file import GGUFFile, GGUFTensor

__all__ = [
    "SUPPORTED_GGUF_ARCHITECTURES",
    "GGUFWeight",
    "iter_gguf_lazy_weights",
    "iter_gguf_weights",
    "num_gguf_tensors",
    "reverse_rope_permute",
]

#: Values of ``general.architecture`` this loader understands.
SUPPORTED_GGUF_ARCHITECTURES: tuple[str, ...] = ("llama", "qwen2", "qwen3")

# Architectures whose q/k projections were rope-permuted by the converter.
_ROPE_PERMUTED_ARCHITECTURES = frozenset({"llama"})

# GGUF tensors that carry no HF parameter and are silently skipped.
_SKIPPED_TENSORS = frozenset({"rope_freqs.weight"})

_GLOBAL_NAME_MAP: dict[str, str] = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

_COMMON_LAYER_NAME_MAP: dict[str, str] = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}

_LAYER_NAME_MAPS: dict[str, dict[str, str]] = {
    "llama": dict(_COMMON_LAYER_NAME_MAP),
    "qwen2": dict(_COMMON_LAYER_NAME_MAP),
    "qwen3": {
        **_COMMON_LAYER_NAME_MAP,
        "attn_q_norm.weight": "self_attn.q_norm.weight",
        "attn_k_norm.weight": "self_attn.k_norm.weight",
    },
}

_LAYER_TENSOR_RE = re.compile(r"^blk\.(\d+)\.(.+)$")


def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Loading GGUF checkpoints requires the `gguf` package: "
            "pip install 'vllm-core[gguf]' (or pip install gguf)."
        ) from exc
    return gguf


def _field_value(reader: GGUFFile, key: str) -> Any:
    """Return the value of metadata field ``key`` (``None`` if absent).

    Scalars are returned as Python scalars, strings as ``str`` and arrays as
    lists.
    """
    return reader.fields.get(key)


def _architecture(reader: GGUFFile, path: str) -> str:
    value = _field_value(reader, "general.architecture")
    if value is None:
        raise ValueError(f"GGUF file {path!r} has no 'general.architecture' metadata field.")
    arch = str(value)
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise ValueError(
            f"Unsupported GGUF architecture {arch!r} in {path!r}; "
            f"supported architectures: {', '.join(SUPPORTED_GGUF_ARCHITECTURES)}."
        )
    return arch


def _head_count(reader: GGUFFile, key: str, layer: int) -> int:
    """Read a head count that may be a scalar or a per-layer array."""
    value = _field_value(reader, key)
    if value is None:
        raise ValueError(f"GGUF metadata field {key!r} is missing; needed to undo the rope permutation.")
    if isinstance(value, list):
        value = value[layer]
    return int(value)


def _hf_name(arch: str, gguf_name: str, num_layers: int | None, path: str) -> str:
    """Map a GGUF tensor name to its Hugging Face parameter name."""
    if gguf_name in _GLOBAL_NAME_MAP:
        return _GLOBAL_NAME_MAP[gguf_name]
    match = _LAYER_TENSOR_RE.match(gguf_name)
    if match is not None:
        layer, suffix = int(match.group(1)), match.group(2)
        hf_suffix = _LAYER_NAME_MAPS[arch].get(suffix)
        if hf_suffix is not None and (num_layers is None or layer < num_layers):
            return f"model.layers.{layer}.{hf_suffix}"
    raise ValueError(
        f"Cannot map GGUF tensor {gguf_name!r} (architecture {arch!r}) in {path!r} "
        "to a Hugging Face parameter name."
    )


def reverse_rope_permute(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's rope row permutation of a q/k projection.

    Args:
        weight: ``(n_head * head_dim, ...)`` weight or ``(n_head * head_dim,)``
            bias as stored in the GGUF file (already in PyTorch shape).
        n_head: number of heads of this projection (``n_head`` for q,
            ``n_head_kv`` for k).

    Returns:
        The tensor with rows in Hugging Face "rotate half" order.
    """
    rows = weight.shape[0]
    if rows % (2 * n_head) != 0:
        raise ValueError(f"Cannot undo rope permutation: {rows} rows is not divisible by 2 * {n_head} heads.")
    half = rows // n_head // 2
    rest = tuple(weight.shape[1:])
    return weight.reshape(n_head, half, 2, *rest).transpose(1, 2).reshape(weight.shape).contiguous()


def _to_torch(tensor: GGUFTensor, gguf: Any) -> torch.Tensor:
    """Dequantize one :class:`~.gguf_file.GGUFTensor` into a PyTorch-shaped tensor.

    F32/F16 stay in their own dtype (copied out of the memory map), BF16 is
    reinterpreted bit-for-bit, everything else goes through
    :func:`gguf.quants.dequantize` (float32).
    """
    qtype = tensor.tensor_type
    types = gguf.GGMLQuantizationType
    shape = tuple(reversed(tensor.shape))
    data = tensor.data
    if qtype == types.F32 or qtype == types.F16:
        out = torch.from_numpy(np.array(data, copy=True))
    elif qtype == types.BF16:
        raw = np.array(data, copy=True).view(np.int16)
        out = torch.from_numpy(raw).view(torch.bfloat16)
    else:
        out = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(data, qtype)))
    return out.reshape(shape)


def iter_gguf_weights(path: str, dtype: torch.dtype = torch.float32) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(hf_name, tensor)`` for every weight of a GGUF checkpoint.

    Tensors are produced one at a time, in file order: dequantized with the
    ``gguf`` package, reshaped to the PyTorch (Hugging Face) shape, rope
    permutation undone for ``llama`` q/k projections, and cast to ``dtype``.
    ``lm_head.weight`` is yielded only if the file stores ``output.weight``
    (otherwise the embeddings are tied).

    Args:
        path: path of the ``.gguf`` file.
        dtype: dtype of the yielded tensors.

    Raises:
        ValueError: unsupported ``general.architecture`` or a tensor name that
            cannot be mapped.
        ImportError: the ``gguf`` package is not installed.
    """
    for name, weight in iter_gguf_lazy_weights(path, dtype):
        yield name, weight.materialize()


class GGUFWeight:
    """One GGUF tensor, dequantized when read (``model_loader.lazy.LazyWeight``). ``narrow`` along
    the rows dequantizes only those rows (a quantized row is whole blocks); q/k rows of a
    rope-permuted file are taken at head boundaries, so the slice is un-permuted on its own.
    Other slices read the whole tensor. ``bytes_read`` counts the file bytes taken."""

    def __init__(
        self, tensor: GGUFTensor, gguf: Any, dtype: torch.dtype, rope_heads: int | None, counter: list[int],
    ) -> None:
        self._tensor, self._gguf, self._dtype = tensor, gguf, dtype
        self._rope_heads = rope_heads
        self._counter = counter
        self.shape: tuple[int, ...] = tuple(reversed(tensor.shape))

    def _convert(self, tensor: GGUFTensor, heads: int | None) -> torch.Tensor:
        self._counter[0] += int(tensor.data.nbytes)
        weight = _to_torch(tensor, self._gguf)
        if heads is not None:
            weight = reverse_rope_permute(weight, heads)
        return weight.to(self._dtype)

    def materialize(self) -> torch.Tensor:
        return self._convert(self._tensor, self._rope_heads)

    @property
    def gguf_type(self) -> str:
        """The tensor's ggml type name as stored (``F32``, ``Q4_1``, ``Q8_0``, ...)."""
        return str(self._gguf.GGMLQuantizationType(self._tensor.tensor_type).name)

    def raw_rows(self) -> np.ndarray:
        """The stored bytes of a 2-D tensor, not dequantized: ``[rows, bytes a row]`` uint8 in
        the PyTorch row order (a quantized row is whole blocks, so the rope permutation of a
        llama q/k projection is undone on the rows as ``materialize`` does). For a platform
        that computes on the quantized blocks; counted in ``bytes_read``."""
        t = self._tensor
        if len(self.shape) != 2:
            raise ValueError(f"GGUF tensor {t.name!r} has shape {self.shape}; raw_rows takes 2-D tensors")
        rows = np.ascontiguousarray(t.data).view(np.uint8).reshape(self.shape[0], -1)
        self._counter[0] += int(rows.nbytes)
        if self._rope_heads is not None:
            rows = reverse_rope_permute(torch.from_numpy(rows.copy()), self._rope_heads).numpy()
        return rows

    def narrow(self, dim: int, start: int, length: int) -> torch.Tensor:
        rows = self.shape[0]
        quantized_1d = len(self.shape) == 1 and self._tensor.data.shape != self.shape
        if dim % len(self.shape) != 0 or quantized_1d or length == rows:
            return self.materialize().narrow(dim, start, length)
        heads = None
        if self._rope_heads is not None:
            head_dim = rows // self._rope_heads
            if start % head_dim or length % head_dim:
                return self.materialize().narrow(dim, start, length)
            heads = length // head_dim
        t = self._tensor
        part = GGUFTensor(t.name, (*t.shape[:-1], length), t.tensor_type, t.data[start:start + length])
        return self._convert(part, heads)


def iter_gguf_lazy_weights(
    path: str, dtype: torch.dtype = torch.float32, counter: list[int] | None = None,
) -> Iterator[tuple[str, GGUFWeight]]:
    """``iter_gguf_weights`` without reading: each tensor is dequantized when the model reads it
    (a pipeline stage skips the others' unread, a tensor-parallel rank reads its rows)."""
    gguf = _import_gguf()
    reader = _open_reader(path)
    arch = _architecture(reader, path)
    block_count = _field_value(reader, f"{arch}.block_count")
    num_layers = int(block_count) if block_count is not None else None
    counter = [0] if counter is None else counter

    for tensor in reader.tensors:
        if tensor.name in _SKIPPED_TENSORS:
            continue
        name = _hf_name(arch, tensor.name, num_layers, path)
        rope_heads = None
        if arch in _ROPE_PERMUTED_ARCHITECTURES and (".self_attn.q_proj." in name or ".self_attn.k_proj." in name):
            # q uses n_head, k uses n_head_kv (falling back to n_head when absent, i.e. no GQA).
            layer = int(name.split(".")[2])
            rope_heads = _head_count(reader, f"{arch}.attention.head_count", layer)
            is_k = ".self_attn.k_proj." in name
            if is_k and _field_value(reader, f"{arch}.attention.head_count_kv") is not None:
                rope_heads = _head_count(reader, f"{arch}.attention.head_count_kv", layer)
        yield name, GGUFWeight(tensor, gguf, dtype, rope_heads, counter)


def num_gguf_tensors(path: str) -> int:
    """Number of tensors :func:`iter_gguf_weights` will yield for ``path``.

    Only reads the header (the tensor data is memory-mapped, not read); meant
    for sizing a progress bar.
    """
    reader = _open_reader(path, keep=True)
    return sum(1 for t in reader.tensors if t.name not in _SKIPPED_TENSORS)


_kept_reader: dict[str, GGUFFile] = {}
"""At most one reader, opened by ``num_gguf_tensors`` and taken by the ``iter_gguf_weights`` that
follows, so the header is parsed once per load."""


def _open_reader(path: str, keep: bool = False) -> GGUFFile:
    """A ``GGUFFile`` of ``path``: the kept one when there is one (taken out), else a new one;
    with ``keep``, kept for the next call."""
    reader = _kept_reader.pop(path, None)
    if reader is None:
        reader = GGUFFile(path)
    if keep:
        _kept_reader.clear()
        _kept_reader[path] = reader
    return reader
