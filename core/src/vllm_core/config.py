"""Engine configuration: one frozen pydantic model per concern, composed into ``EngineConfig``.

Values discovered at run time (the resolved dtype, the number of KV blocks) live in result
objects of their own (``ModelInfo``, ``KVCacheSpec``), never written back here.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

DType = Literal["auto", "float32", "bfloat16", "float16", "half", "float", "bf16", "fp16", "fp32"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class ModelConfig(_Frozen):
    """What to load and how."""

    model: str
    """Path to a Hugging Face model directory, a ``.gguf`` file, or a dummy-config directory."""
    tokenizer: str | None = None
    """Tokenizer path; defaults to ``model``."""
    dtype: DType = "auto"
    """Weight and activation dtype; ``auto`` takes the model's own, float32 when it has none."""
    max_model_len: int | None = Field(default=None, gt=0)
    """Longest sequence (prompt + output); defaults to the model's context length."""
    load_format: str = "auto"
    """Name of a registered model loader (``auto``, ``safetensors``, ``gguf``, ``dummy``)."""
    seed: int = 0
    """Seed of the engine's global random generator (dummy weights, unseeded sampling)."""
    skip_tokenizer_init: bool = False
    """Do not load a tokenizer: prompts must be token ids and outputs carry no text."""
    enforce_eager: bool = False
    """Never replay captured graphs (CUDA graphs on platforms that have them)."""
    max_logprobs: int = Field(default=20, ge=-1)
    """Most ``logprobs`` / ``prompt_logprobs`` a request may ask for; -1: no limit."""
    logprobs_mode: Literal["raw_logprobs", "raw_logits", "processed_logprobs", "processed_logits"] = "raw_logprobs"
    """What sampled-token logprobs report: the model's distribution (raw) or the sampler's after
    penalties, masks, temperature and top-k/top-p/min-p (processed); logprobs or logits."""
    limit_mm_per_prompt: dict[str, int] = {}
    """Most multimodal items of each modality one prompt may carry (``{"image": 4}``); a modality
    left out allows one (``vllm_core.multimodal.DEFAULT_LIMIT_PER_PROMPT``, vLLM's old default)."""


class CacheConfig(_Frozen):
    """Paged KV cache sizing and prefix caching."""

    block_size: int | None = Field(default=None, gt=0)
    """Tokens per KV block; None: the platform's ``default_block_size`` (16; 128 on cpu)."""
    enable_prefix_caching: bool = True
    """Reuse KV blocks of identical prompt prefixes (hash chain of full blocks)."""
    kv_cache_memory_bytes: int | None = Field(default=None, gt=0)
    """Exact KV cache size in bytes; overrides the platform's default sizing."""
    num_gpu_blocks_override: int | None = Field(default=None, gt=0)
    """Exact number of KV blocks; overrides every other sizing rule."""
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    """Fraction of device memory the engine may use (accelerator platforms)."""
    cpu_kv_cache_fraction: float = Field(default=0.25, gt=0.0, le=0.9)
    """On CPU platforms: fraction of free memory for the KV cache (at most ``cpu_kv_cache_max_bytes``)."""
    cpu_kv_cache_max_bytes: int = Field(default=4 << 30, gt=0)
    """Upper bound of the default CPU KV cache size (4 GiB, as vLLM's CPU backend)."""


class SchedulerConfig(_Frozen):
    """Continuous batching limits."""

    max_num_seqs: int = Field(default=256, gt=0)
    """Most requests in one step."""
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    """Token budget of one step (prefill chunks plus decodes); default 8192."""
    enable_chunked_prefill: bool = True
    """Split long prompts across steps to fit the token budget."""
    async_scheduling: bool | None = None
    """Schedule step N+1 while step N runs on the device (its sampled tokens are fed from device
    memory); None takes the platform's default (on for accelerators)."""


class ParallelConfig(_Frozen):
    """How the model is spread over devices and processes (vLLM's names).

    A world of ``tensor_parallel_size x pipeline_parallel_size`` ranks, one per device (one per
    process on CPU platforms): each layer split over ``tensor_parallel_size`` ranks, consecutive
    layers on ``pipeline_parallel_size`` stages."""

    tensor_parallel_size: int = Field(default=1, ge=1)
    """Devices each layer is split over (tensor parallelism)."""
    pipeline_parallel_size: int = Field(default=1, ge=1)
    """Consecutive groups of layers on different devices (pipeline parallelism)."""
    distributed_executor_backend: Literal["uni", "mp", "ray"] | None = None
    """How workers run: ``uni`` (in process, a world of one), ``mp`` (one process per rank on this
    node), ``ray`` (Ray actors, across nodes). None: ``uni`` for a world of one; else ``ray`` when a
    Ray cluster is already initialised in this process or the world is larger than this node's
    devices, ``mp`` otherwise (vLLM's rule)."""
    distributed_timeout_s: float = Field(default=300.0, gt=0)
    """How long the engine waits for a worker (a step's tokens, a collective between ranks) before
    it fails with an error naming the rank; a dead worker is noticed at once."""

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @model_validator(mode="after")
    def _check(self) -> ParallelConfig:
        if self.world_size > 1 and self.distributed_executor_backend == "uni":
            raise ValueError(
                f"distributed_executor_backend='uni' runs one process, but tensor_parallel_size="
                f"{self.tensor_parallel_size} x pipeline_parallel_size={self.pipeline_parallel_size} needs "
                f"{self.world_size}; use 'mp' (one node), 'ray' (several nodes) or leave it unset"
            )
        return self


class SpeculativeConfig(_Frozen):
    """Speculative decoding (vLLM's ``speculative_config``): a proposer drafts tokens that the
    model verifies in one step; greedy output is unchanged, sampled output keeps its distribution."""

    method: str = "ngram"
    """A registered proposer (``register_proposers``): ``ngram`` (prompt lookup) is built in."""
    num_speculative_tokens: int = Field(gt=0, le=64)
    """Most draft tokens per request and step."""
    prompt_lookup_max: int | None = Field(default=None, gt=0)
    """n-gram: longest suffix looked up in the sequence (default: ``prompt_lookup_min``, else 5)."""
    prompt_lookup_min: int | None = Field(default=None, gt=0)
    """n-gram: shortest suffix looked up (default: ``prompt_lookup_max``, else 5)."""
    model: str | None = None
    """Draft or EAGLE model of the methods that need one (``draft_model``: a small model with the
    target's vocabulary, loaded like any model: a Hugging Face directory or a ``.gguf`` file)."""
    disable_by_batch_size: int | None = Field(default=32, gt=0)
    """Off-switch (vLLM's name): a step with more sampling requests than this drafts nothing, as
    verifying drafts costs compute that a large batch no longer has to spare. None: never."""
    min_acceptance_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    """Off-switch: a request whose recent acceptance rate (a moving average over its verified
    steps) falls below this is not drafted for a while (``vllm_core.spec_decode.policy``)."""

    @property
    def lookup_range(self) -> tuple[int, int]:
        """(min, max) n-gram length."""
        hi = self.prompt_lookup_max or self.prompt_lookup_min or 5
        lo = self.prompt_lookup_min or min(hi, 5)
        return lo, hi

    @model_validator(mode="after")
    def _check(self) -> SpeculativeConfig:
        lo, hi = self.lookup_range
        if lo > hi:
            raise ValueError(f"prompt_lookup_min ({lo}) is larger than prompt_lookup_max ({hi})")
        if self.method in ("draft_model", "eagle", "eagle3") and not self.model:
            raise ValueError(
                f"speculative method {self.method!r} needs a model: add \"model\": PATH (a small model "
                "with the target's vocabulary)"
            )
        return self


class DeviceConfig(_Frozen):
    """Which platform runs the model."""

    device: str | None = None
    """Platform name to force (``VLLM_CORE_DEVICE`` when unset); None picks the best available."""


class PluginConfig(_Frozen):
    """Base of a plugin's own engine-argument section (``register_engine_args``).

    Subclass it with a ``name`` and typed, documented fields; the fields become keyword
    arguments of ``LLM(...)`` and flags of the CLI (``max_loras`` -> ``--max-loras``), and the
    engine carries the validated section in ``EngineConfig.plugins`` under its ``name``::

        class LoRAConfig(PluginConfig):
            name: ClassVar[str] = "lora"
            enable_lora: bool = False
            max_loras: int = Field(default=1, gt=0)
    """

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=(), use_attribute_docstrings=True)
    """Field docstrings are the fields' descriptions (the CLI flags' help)."""

    name: ClassVar[str]


P = TypeVar("P", bound=PluginConfig)


class EngineConfig(_Frozen):
    """Everything the engine needs, composed."""

    model: ModelConfig
    cache: CacheConfig = CacheConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    parallel: ParallelConfig = ParallelConfig()
    device: DeviceConfig = DeviceConfig()
    speculative: SpeculativeConfig | None = None
    """Speculative decoding; None: off."""
    plugins: dict[str, Any] = {}
    """Plugins' engine-argument sections (``PluginConfig`` instances) by section name; read
    them with ``plugin_config(cls)``."""

    def plugin_config(self, cls: type[P]) -> P | None:
        """The engine's ``cls`` section, or None when it was not built with that plugin."""
        section = self.plugins.get(cls.name)
        return section if isinstance(section, cls) else None

    @model_validator(mode="after")
    def _check(self) -> EngineConfig:
        sc = self.scheduler
        if (
            not sc.enable_chunked_prefill
            and sc.max_num_batched_tokens is not None
            and self.model.max_model_len is not None
            and sc.max_num_batched_tokens < self.model.max_model_len
        ):
            raise ValueError(
                f"max_num_batched_tokens ({sc.max_num_batched_tokens}) is smaller than "
                f"max_model_len ({self.model.max_model_len}) with chunked prefill off; "
                "raise max_num_batched_tokens or enable chunked prefill"
            )
        return self
