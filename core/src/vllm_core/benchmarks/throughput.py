"""``bench throughput``: one timed ``generate()`` over all prompts, as ``vllm bench throughput``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from vllm_core.benchmarks.datasets import RandomDataset, SampleRequest
from vllm_core.entrypoints.llm import LLM
from vllm_core.sampling_params import SamplingParams

WARMUP_PROMPTS = 4
WARMUP_INPUT_LEN = 16
WARMUP_OUTPUT_LEN = 4


@dataclass(frozen=True)
class ThroughputResult:
    """Counts and wall time of the timed run; rates are derived from them."""

    num_requests: int
    elapsed_time: float
    """Seconds of the timed ``generate()`` call."""
    total_prompt_tokens: int
    total_output_tokens: int
    cpu_time: float | None = None
    """CPU seconds the process spent in the timed call (all its threads): on a shared machine,
    what the run cost without the other load's share of the wall time."""

    @property
    def total_num_tokens(self) -> int:
        return self.total_prompt_tokens + self.total_output_tokens

    @property
    def requests_per_second(self) -> float:
        return self.num_requests / self.elapsed_time

    @property
    def tokens_per_second(self) -> float:
        """Prompt plus output tokens per second (vLLM's "total tokens/s")."""
        return self.total_num_tokens / self.elapsed_time

    @property
    def output_tokens_per_second(self) -> float:
        return self.total_output_tokens / self.elapsed_time

    def to_dict(self) -> dict[str, Any]:
        """vLLM's JSON keys (``elapsed_time``, ``requests_per_second``, ...) plus the token split."""
        return {
            "num_requests": self.num_requests,
            "elapsed_time": self.elapsed_time,
            "total_num_tokens": self.total_num_tokens,
            "total_prompt_tokens": self.total_prompt_tokens,
            "total_output_tokens": self.total_output_tokens,
            "requests_per_second": self.requests_per_second,
            "tokens_per_second": self.tokens_per_second,
            "output_tokens_per_second": self.output_tokens_per_second,
            "cpu_time": self.cpu_time,
        }

    def table_rows(self) -> list[tuple[str, Any]]:
        return [
            ("Successful requests", self.num_requests),
            ("Elapsed time (s)", self.elapsed_time),
            ("Total prompt tokens", self.total_prompt_tokens),
            ("Total output tokens", self.total_output_tokens),
            ("Request throughput (req/s)", self.requests_per_second),
            ("Total token throughput (tok/s)", self.tokens_per_second),
            ("Output token throughput (tok/s)", self.output_tokens_per_second),
        ]


def sampling_params(output_len: int, temperature: float) -> SamplingParams:
    """Exactly ``output_len`` tokens, no text: what vLLM's benchmarks ask for."""
    return SamplingParams(
        temperature=temperature, top_p=1.0, max_tokens=output_len, ignore_eos=True, detokenize=False
    )


def _prompts(requests: list[SampleRequest]) -> list[Any]:
    return [{"prompt_token_ids": r.prompt_token_ids} for r in requests]


def warmup(llm: LLM, dataset: RandomDataset, vocab_size: int, temperature: float) -> None:
    """A few short requests so lazy initialisation (kernels, allocator) is not timed.

    They are no longer than the dataset's shortest request, so they fit wherever it does, and
    their tokens come from another seed: a warm-up prompt that was a prefix of a timed one would
    turn into a prefix-cache hit.
    """
    input_len = min(WARMUP_INPUT_LEN, dataset.input_len_range[0])
    output_len = min(WARMUP_OUTPUT_LEN, dataset.output_len_range[0])
    short = RandomDataset((input_len, input_len), (output_len, output_len), dataset.seed + 1)
    requests = short.sample(WARMUP_PROMPTS, vocab_size)
    llm.generate(_prompts(requests), sampling_params(output_len, temperature), use_tqdm=False)


def run_throughput(llm: LLM, requests: list[SampleRequest], temperature: float = 0.0) -> ThroughputResult:
    """Time one ``generate()`` of every request; token counts are those actually produced."""
    params = [sampling_params(r.expected_output_len, temperature) for r in requests]
    prompts = _prompts(requests)
    platform = llm.llm_engine.platform
    platform.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    platform.synchronize()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return ThroughputResult(
        num_requests=len(outputs),
        elapsed_time=elapsed,
        total_prompt_tokens=sum(len(o.prompt_token_ids) for o in outputs),
        total_output_tokens=sum(len(c.token_ids) for o in outputs for c in o.outputs),
        cpu_time=cpu,
    )
