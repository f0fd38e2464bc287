"""PEFT LoRA adapters: read, check against the base model, load.

An adapter is a directory holding ``adapter_config.json`` and ``adapter_model.safetensors``
(what ``PeftModel.save_pretrained`` writes). Supported: ``r``, ``lora_alpha``, ``use_rslora``,
``target_modules`` as a list or a regex string, ``bias: "none"``, on the projections
``q_proj k_proj v_proj o_proj gate_proj up_proj down_proj`` (q/k/v and gate/up map onto the
slices of our fused ``qkv_proj`` / ``gate_up_proj``, each slice with its own A and B) and on the
input embedding ``embed_tokens`` (PEFT's ``lora_embedding_A`` [r, vocab] / ``lora_embedding_B``
[hidden, r], the base vocabulary) and the output projection ``lm_head`` (A [r, hidden], B
[vocab, r]). Anything else (``modules_to_save``, extra vocabulary) is refused at load with the
value and the fix, never skipped.

Every check here reads only the config and the safetensors header (tensor names and shapes),
so the front end runs it for each new adapter before a request reaches the engine; the
engine core loads the tensors later (``load_adapter``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

import torch

from vllm_core.plugins.api import RequestError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"

MODULE_SLICES: dict[str, tuple[str, int]] = {
    "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
    "o_proj": ("o_proj", 0),
    "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
    "down_proj": ("down_proj", 0),
}
"""PEFT module name -> (our module, its slice)."""
EMBEDDING = "embed_tokens"
"""The input embedding: LoRA'd by a gather of A's rows (``EMBEDDING_LAYER`` in the module pairs)."""
EMBEDDING_LAYER = -1
LM_HEAD = "lm_head"
"""The output projection: its delta is added to the logits rows of the adapter's requests."""
LM_HEAD_LAYER = -2
SUPPORTED_MODULES = (*MODULE_SLICES, EMBEDDING, LM_HEAD)
_PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
_EMBED_KEY = re.compile(r"^base_model\.model\.model\.embed_tokens\.lora_embedding_([AB])$")
_HEAD_KEY = re.compile(r"^base_model\.model\.lm_head\.lora_([AB])\.weight$")
_BASE_COPY_KEYS = ("base_model.model.model.embed_tokens.base_layer.weight", "base_model.model.lm_head.base_layer.weight")
"""The copies of the base embedding / head PEFT saves beside their LoRA (``save_embedding_layers``):
ignored when they have the base model's shape, as vLLM does."""
_UNSUPPORTED = "modules_to_save, bias and extra-vocabulary adapters are not"


class AdapterError(RequestError):
    """An adapter that cannot be served: the message names the file, the value and the fix."""


@dataclass(frozen=True)
class ModelShapes:
    """The projection sizes of the base model, from its Hugging Face config."""

    num_layers: int
    hidden: int
    q_size: int
    kv_size: int
    intermediate: int
    vocab: int = 0

    @classmethod
    def from_hf_config(cls, config: Any) -> ModelShapes:
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(config.num_hidden_layers, config.hidden_size, heads * head_dim, kv_heads * head_dim,
                   config.intermediate_size, config.vocab_size)

    def in_out(self, module: str) -> tuple[int, int]:
        """(in_features, out_features) of a PEFT module name."""
        return {
            "q_proj": (self.hidden, self.q_size), "k_proj": (self.hidden, self.kv_size),
            "v_proj": (self.hidden, self.kv_size), "o_proj": (self.q_size, self.hidden),
            "gate_proj": (self.hidden, self.intermediate), "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden), EMBEDDING: (self.vocab, self.hidden),
            LM_HEAD: (self.hidden, self.vocab),
        }[module]


@dataclass(frozen=True)
class AdapterSpec:
    """A checked adapter: its hyperparameters, the tensors it has, its content digest."""

    path: str
    rank: int
    scaling: float
    """``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``)."""
    modules: tuple[tuple[int, str], ...]
    """(layer, PEFT module) pairs the adapter changes (``(EMBEDDING_LAYER, "embed_tokens")`` for
    the input embedding, ``(LM_HEAD_LAYER, "lm_head")`` for the output projection)."""
    digest: str
    """SHA-256 of the config and the weights: what identifies the adapter's content."""


def _fail(path: str, msg: str) -> AdapterError:
    return AdapterError(f"LoRA adapter {path!r}: {msg}")


def read_config(path: str) -> dict[str, Any]:
    """The adapter's config, checked for what this plugin serves."""
    if not os.path.isdir(path):
        raise _fail(path, "not found or not a directory; give the directory PeftModel.save_pretrained wrote")
    cfg_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(cfg_path):
        raise _fail(path, f"has no {CONFIG_FILE}; is it a PEFT adapter directory?")
    if not os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
        if os.path.isfile(os.path.join(path, PICKLE_FILE)):
            raise _fail(path, f"holds {PICKLE_FILE} (a PyTorch pickle) and no {WEIGHTS_FILE}: pickles are refused "
                        "because loading one can run arbitrary code; save the adapter with safetensors "
                        "(PeftModel.save_pretrained(dir, safe_serialization=True))")
        raise _fail(path, f"has no {WEIGHTS_FILE}")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise _fail(path, f"{CONFIG_FILE} is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise _fail(path, f"{CONFIG_FILE} must hold a JSON object")
    peft_type = cfg.get("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        raise _fail(path, f"peft_type {peft_type!r} is not supported; supported: LORA")
    if cfg.get("modules_to_save"):
        raise _fail(path, f"modules_to_save={cfg['modules_to_save']!r} is not supported (it replaces whole base "
                    "modules: a full embedding or lm_head copy per adapter); train the adapter without "
                    "modules_to_save (a LoRA on embed_tokens is supported)")
    for key in ("trainable_token_indices", "new_tokens"):
        if cfg.get(key):
            raise _fail(path, f"{key} (extra or retrained vocabulary) is not supported; supported: adapters over "
                        "the base model's vocabulary")
    if cfg.get("bias", "none") != "none":
        raise _fail(path, f"bias={cfg['bias']!r} is not supported; supported: 'none'")
    for key in ("use_dora", "fan_in_fan_out"):
        if cfg.get(key):
            raise _fail(path, f"{key}=true is not supported")
    for key in ("rank_pattern", "alpha_pattern"):
        if cfg.get(key):
            raise _fail(path, f"{key} (per-module ranks or alphas) is not supported; use one r and lora_alpha")
    return cfg


def check_targets(path: str, target_modules: Any, shapes: ModelShapes) -> None:
    """``target_modules`` (a list of names or a regex over module paths) names only modules we serve."""
    if isinstance(target_modules, str):
        names = [f"model.layers.{i}.{_PARENT[m]}.{m}" for i in range(shapes.num_layers) for m in MODULE_SLICES]
        names += [f"model.{EMBEDDING}", LM_HEAD]
        if not any(re.fullmatch(target_modules, n) or n.endswith(target_modules) for n in names):
            raise _fail(path, f"target_modules {target_modules!r} matches no supported module; "
                        f"supported: {', '.join(SUPPORTED_MODULES)}")
        return
    if not isinstance(target_modules, list) or not target_modules:
        raise _fail(path, f"target_modules must be a list of module names or a regex, got {target_modules!r}")
    bad = [m for m in target_modules if m not in SUPPORTED_MODULES]
    if bad:
        raise _fail(path, f"target module(s) {', '.join(map(repr, bad))} not supported; supported: "
                    f"{', '.join(SUPPORTED_MODULES)}")


def check_adapter(path: str, shapes: ModelShapes, max_rank: int) -> AdapterSpec:
    """Check config and tensor shapes against the base model and ``max_lora_rank`` (reads the
    safetensors header only; the content digest is cached per file version)."""
    path = os.path.abspath(os.path.expanduser(path))
    cfg = read_config(path)
    rank = cfg.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise _fail(path, f"r must be an integer >= 1, got {rank!r}")
    if rank > max_rank:
        raise _fail(path, f"rank r={rank} exceeds max_lora_rank={max_rank}; start the engine with "
                    f"max_lora_rank >= {rank}")
    alpha = cfg.get("lora_alpha", 8)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise _fail(path, f"lora_alpha must be a number, got {alpha!r}")
    scaling = alpha / (rank**0.5) if cfg.get("use_rslora") else alpha / rank
    check_targets(path, cfg.get("target_modules"), shapes)
    modules = _check_tensors(path, shapes, rank)
    return AdapterSpec(path, rank, float(scaling), modules, content_digest(path))


def _whole_layer(key: str, shapes: ModelShapes, rank: int
                 ) -> tuple[tuple[int, str, str], tuple[int, int]] | None:
    """For the embedding's or the head's LoRA tensor: ((layer, module, "A" | "B"), the shape the
    base model needs); None for any other key."""
    e = _EMBED_KEY.match(key)
    if e is not None:
        return (EMBEDDING_LAYER, EMBEDDING, e[1]), ((rank, shapes.vocab) if e[1] == "A" else (shapes.hidden, rank))
    h = _HEAD_KEY.match(key)
    if h is not None:
        return (LM_HEAD_LAYER, LM_HEAD, h[1]), ((rank, shapes.hidden) if h[1] == "A" else (shapes.vocab, rank))
    return None


def _check_tensors(path: str, shapes: ModelShapes, rank: int) -> tuple[tuple[int, str], ...]:
    from safetensors import SafetensorError, safe_open

    found: dict[tuple[int, str], set[str]] = {}
    try:
        with safe_open(os.path.join(path, WEIGHTS_FILE), framework="pt") as f:
            for key in f.keys():
                if key in _BASE_COPY_KEYS:
                    got = tuple(f.get_slice(key).get_shape())
                    if got != (shapes.vocab, shapes.hidden):
                        raise _fail(path, f"tensor {key!r} has shape {got}, the base model's embedding / head is "
                                    f"{(shapes.vocab, shapes.hidden)}: adapters with extra vocabulary are not "
                                    "supported")
                    continue
                whole = _whole_layer(key, shapes, rank)
                if whole is not None:
                    (layer, module, ab), want = whole
                    got = tuple(f.get_slice(key).get_shape())
                    if got != want:
                        raise _fail(path, f"tensor {key!r} has shape {got}, the base model needs {want} (an adapter "
                                    "with extra vocabulary, or trained on another model?)")
                    found.setdefault((layer, module), set()).add(ab)
                    continue
                m = _KEY.match(key)
                if m is None:
                    raise _fail(path, f"tensor {key!r} is not a LoRA A/B weight of a supported module; supported: "
                                f"{', '.join(SUPPORTED_MODULES)} ({_UNSUPPORTED})")
                layer, parent, module, ab = int(m[1]), m[2], m[3], m[4]
                if module not in MODULE_SLICES or _PARENT[module] != parent:
                    raise _fail(path, f"tensor {key!r}: module {parent}.{module} is not supported; supported: "
                                f"{', '.join(SUPPORTED_MODULES)}")
                if layer >= shapes.num_layers:
                    raise _fail(path, f"tensor {key!r}: layer {layer} does not exist; the base model has "
                                f"{shapes.num_layers} layers (was the adapter trained on another model?)")
                n_in, n_out = shapes.in_out(module)
                want = (rank, n_in) if ab == "A" else (n_out, rank)
                got = tuple(f.get_slice(key).get_shape())
                if got != want:
                    raise _fail(path, f"tensor {key!r} has shape {got}, the base model needs {want} "
                                "(was the adapter trained on another model?)")
                found.setdefault((layer, module), set()).add(ab)
    except AdapterError:
        raise
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:  # a truncated or foreign file
        raise _fail(path, f"cannot read {WEIGHTS_FILE}: {exc}") from None
    half = [k for k, v in found.items() if v != {"A", "B"}]
    if half:
        where = half[0][1] if half[0][0] < 0 else f"layer {half[0][0]} {half[0][1]}"
        raise _fail(path, f"{where} has only lora_{''.join(found[half[0]])}; both A and B are needed")
    if not found:
        raise _fail(path, f"{WEIGHTS_FILE} holds no LoRA weights")
    return tuple(sorted(found))


def load_adapter(spec: AdapterSpec) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    """The adapter's tensors on the host: (layer, PEFT module) -> (A [r, in], B [out, r]).

    The bytes read are hashed and must match ``spec.digest``: an adapter rewritten after the
    front end checked it is refused rather than served under the old content's KV blocks."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    try:
        blobs = [_read(os.path.join(spec.path, name)) for name in (CONFIG_FILE, WEIGHTS_FILE)]
        h = hashlib.sha256()
        for blob in blobs:
            h.update(blob)
            h.update(b"\0")
        if h.hexdigest() != spec.digest:
            raise _fail(spec.path, "its files changed after the request was checked; send the request again")
        tensors = load_bytes(blobs[1])
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        if isinstance(exc, AdapterError):
            raise
        raise _fail(spec.path, f"cannot read {WEIGHTS_FILE}: {exc}") from None
    out: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
    for layer, module in spec.modules:
        if module == EMBEDDING:
            prefix = f"base_model.model.model.{EMBEDDING}.lora_embedding_"
            out[(layer, module)] = (tensors[prefix + "A"], tensors[prefix + "B"])
            continue
        if module == LM_HEAD:
            prefix = f"base_model.model.{LM_HEAD}.lora_"
            out[(layer, module)] = (tensors[prefix + "A.weight"], tensors[prefix + "B.weight"])
            continue
        prefix = f"base_model.model.model.layers.{layer}.{_PARENT[module]}.{module}.lora_"
        out[(layer, module)] = (tensors[prefix + "A.weight"], tensors[prefix + "B.weight"])
    return out


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


_digests: dict[tuple[str, int, int, int, int], str] = {}
_digest_lock = threading.Lock()


def content_digest(path: str) -> str:
    """SHA-256 over the config and the weights file, cached per (path, mtime, size) of both:
    an adapter rewritten in place under the same name gets a new digest, so its requests never
    reuse KV blocks computed with the old weights."""
    files = [os.path.join(path, CONFIG_FILE), os.path.join(path, WEIGHTS_FILE)]
    stats = [os.stat(f) for f in files]
    key = (path, stats[0].st_mtime_ns, stats[0].st_size, stats[1].st_mtime_ns, stats[1].st_size)
    with _digest_lock:
        cached = _digests.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    digest = h.hexdigest()
    with _digest_lock:
        _digests[key] = digest
    return digest
