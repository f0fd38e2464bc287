"""Host time of a verification step vs a plain decode step, by phase (CPU, small model).

The GPU benchmark's ``miss_k4_raw`` (``benchmarks/spec_decode_gpu.py``: a proposer whose ``k = 4``
drafts are always rejected, the acceptance off-switch disabled) against ``plain``, at batch 1,
on a small model: a tiny random Llama (default) or SmolLM2 (``--model smollm2``), on the
platform the engine picks (``VLLM_CORE_DEVICE=reference`` or ``cpu`` to force one). With a small
model, whatever a verify step costs beyond a plain step is per-step bookkeeping that does not
scale with the model, exactly what is exposed on a GPU where verify steps run synchronously.

Each engine phase is timed with ``time.perf_counter`` around the engine's own functions, wrapped
in this process only (the wrappers add ~1 us per call): schedule, prepare_inputs (the step's
tensors, slot mapping), forward (graph/plan replay or eager), logits (lm head), sampling_metadata,
draft_rows (the ``k + 1`` sampling rows and the draft batch), sample / verify (sampler,
rejection), logprobs, accept (extensions' token bookkeeping), propose (the proposer), fetch
(tokens to the host), update (scheduler: computed tokens, KV rollback, stop checks), outputs
(output processor). ``other`` is the rest of ``LLMEngine.step``. ``host`` = step - forward -
logits: what a GPU pays on the host per step.

    python benchmarks/spec_decode_overhead.py [--model tiny|smollm2] [--steps 200] [--repeat 3]
                                              [--cprofile] [--save-result out.json]

It prints per-phase median microseconds per decode step for ``plain`` and ``miss_k4_raw`` (best of
``--repeat`` alternating runs), their difference, and with ``--cprofile`` the top functions of the
verify steps.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from spec_decode_gpu import register_forced_miss  # the one forced-miss proposer of the benchmarks

PHASES = ("schedule", "prepare_inputs", "forward", "logits", "sampling_metadata", "draft_rows", "sample", "verify",
          "logprobs", "accept", "propose", "fetch", "update", "outputs")

__all__ = ["PHASES", "PhaseClock", "instrument", "register_forced_miss", "summarize"]


def tiny_llama(vocab: int) -> str:
    """A random Llama (2 layers, hidden 64) saved as a HF checkpoint; returns its directory."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    path = tempfile.mkdtemp(prefix="tiny-llama-")
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(path, safe_serialization=True)
    return path


class PhaseClock:
    """Inclusive perf_counter time of named phases per step; a phase nested in itself counts once."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.current: dict[str, float] | None = None
        self._open: set[str] = set()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.current is None or name in self._open:
                return fn(*args, **kwargs)
            self._open.add(name)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._open.discard(name)
                if self.current is not None:
                    self.current[name] = self.current.get(name, 0.0) + time.perf_counter() - start
        return timed

    def patch(self, owner: Any, attr: str, name: str) -> None:
        setattr(owner, attr, self.wrap(name, getattr(owner, attr)))


class _SamplerProxy:
    """Times the sampler's ``__call__`` and ``verify`` (looked up on the type, so wrapped here)."""

    def __init__(self, sampler: Any, clock: PhaseClock) -> None:
        self._sampler = sampler
        self._call = clock.wrap("sample", sampler.__call__)
        self.verify = clock.wrap("verify", sampler.verify)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sampler, name)


def instrument(llm: Any, clock: PhaseClock) -> Callable[[], Any]:
    """Wrap the engine's phases; returns the timed ``LLMEngine.step``."""
    import vllm_core.worker.model_runner as mr
    from vllm_core.sample.metadata import SamplingMetadata

    engine = llm.llm_engine
    core = engine.core
    runner = core.runner
    clock.patch(core.scheduler, "schedule", "schedule")
    clock.patch(core.scheduler, "update_from_output", "update")
    clock.patch(engine.output_processor, "process", "outputs")
    clock.patch(runner.model, "forward", "forward")
    if runner.graph_runner is not None:
        clock.patch(runner.graph_runner, "try_run", "forward")
    clock.patch(runner.model, "compute_logits", "logits")
    clock.patch(runner.extensions, "accept_tokens", "accept")
    clock.patch(runner.extensions, "propose_drafts", "propose")
    runner.sampler = _SamplerProxy(runner.sampler, clock)
    if not getattr(mr, "_overhead_patched", False):  # module-level names: once per process
        mr._overhead_patched = True  # type: ignore[attr-defined]
        for attr, name in (("prepare_inputs", "prepare_inputs"), ("expand_draft_rows", "draft_rows"),
                           ("draft_batch", "draft_rows"), ("sample_logprobs", "logprobs"),
                           ("verified_logprobs", "logprobs")):
            if hasattr(mr, attr):
                clock.patch(mr, attr, name)
        build = SamplingMetadata.build.__func__  # type: ignore[attr-defined]
        SamplingMetadata.build = classmethod(clock.wrap("sampling_metadata", build))  # type: ignore[method-assign]
        clock.patch(mr.PendingRunnerOutput, "get", "fetch")
    inner = engine.step

    def step() -> Any:
        sched = core.scheduler
        kind = "decode"
        if any(r.num_computed_tokens == 0 for r in sched.running) or sched.waiting:
            kind = "prefill"
        elif any(r.spec_token_ids for r in sched.running):
            kind = "verify"
        clock.current = {"kind": kind}  # type: ignore[dict-item]
        start = time.perf_counter()
        try:
            return inner()
        finally:
            clock.current["step"] = time.perf_counter() - start
            clock.steps.append(clock.current)
            clock.current = None

    return step


def run_engine(llm: Any, step: Callable[[], Any], prompt: list[int], steps: int, profile: cProfile.Profile | None) -> None:
    from vllm_core import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=steps, ignore_eos=True, detokenize=False)
    engine = llm.llm_engine
    engine.add_request(engine.next_request_id(), {"prompt_token_ids": prompt}, params)
    first = True
    while engine.has_unfinished_requests():
        if profile is not None and not first:
            profile.enable()
        step()
        if profile is not None:
            profile.disable()
        first = False


def summarize(steps: list[dict[str, Any]], kind: str) -> dict[str, float]:
    """Median microseconds per step of ``kind`` for each phase, ``other``, ``host`` and ``step``
    (medians: the machine may be shared; the first five such steps are warm-up and dropped)."""
    chosen = [s for s in steps if s["kind"] == kind][5:]
    if not chosen:
        return {}
    for s in chosen:
        s["other"] = s["step"] - sum(s.get(p, 0.0) for p in PHASES)
        s["host"] = s["step"] - s.get("forward", 0.0) - s.get("logits", 0.0)
    out = {p: 1e6 * statistics.median(s.get(p, 0.0) for s in chosen) for p in (*PHASES, "other", "host", "step")}
    out["steps"] = len(chosen)
    return {k: round(v, 1) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny (random Llama), smollm2 (the embedded model) or a path")
    ap.add_argument("--vocab", type=int, default=4096, help="the tiny model's vocabulary")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=200, help="output tokens per run")
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs of each engine (best is reported)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--async-scheduling", action="store_true", help="as on a GPU: plain steps run ahead")
    ap.add_argument("--cprofile", action="store_true", help="cProfile the verify steps of one extra run")
    ap.add_argument("--sort", default="tottime", help="cProfile sort key (tottime, cumulative)")
    ap.add_argument("--save-result", default=None)
    args = ap.parse_args()

    from vllm_core import LLM

    register_forced_miss()
    model = {"tiny": lambda: tiny_llama(args.vocab), "smollm2": lambda: None}.get(args.model, lambda: args.model)()
    common: dict[str, Any] = dict(max_model_len=2048, num_gpu_blocks_override=256, use_tqdm_on_load=False,
                                  skip_tokenizer_init=model is not None)
    if model is not None:
        common["model"] = model
    if args.async_scheduling:
        common["async_scheduling"] = True
    miss = {"method": "forced_miss", "num_speculative_tokens": args.k, "min_acceptance_rate": 0.0}
    configs = {"plain": None, f"miss_k{args.k}_raw": miss}
    clock = PhaseClock()  # one for both engines: module-level functions are wrapped once
    engines, steps = {}, {}
    for name, spec in configs.items():
        engines[name] = LLM(speculative_config=spec, **common)
        steps[name] = instrument(engines[name], clock)
    vocab = engines["plain"].llm_engine.loaded.hf_config.vocab_size
    rng = random.Random(0)
    prompt = [rng.randrange(10, vocab) for _ in range(args.input_len)]
    platform = engines["plain"].llm_engine.platform.name

    runs: dict[str, list[dict[str, float]]] = defaultdict(list)
    for _ in range(args.repeat):
        for name in configs:
            clock.steps.clear()
            run_engine(engines[name], steps[name], prompt, args.steps, None)
            kind = "decode" if configs[name] is None else "verify"
            runs[name].append(summarize(clock.steps, kind))
    best = {name: min(rs, key=lambda r: r["step"]) for name, rs in runs.items()}
    plain, miss_name = best["plain"], f"miss_k{args.k}_raw"
    verify = best[miss_name]
    print(f"platform {platform}, model {args.model}, batch 1, {args.steps} tokens, best of {args.repeat}; "
          "median us per decode step")
    print(f"{'phase':>18} {'plain':>9} {miss_name:>12} {'delta':>9}")
    for p in (*PHASES, "other", "host", "step"):
        print(f"{p:>18} {plain.get(p, 0):9.1f} {verify.get(p, 0):12.1f} {verify.get(p, 0) - plain.get(p, 0):9.1f}")
    result: dict[str, Any] = {"platform": platform, "model": args.model, "k": args.k, "steps": args.steps,
                              "best": best, "runs": runs,
                              "verify_minus_plain_host_us": round(verify["host"] - plain["host"], 1),
                              "verify_minus_plain_step_us": round(verify["step"] - plain["step"], 1)}
    print(json.dumps({k: result[k] for k in ("verify_minus_plain_host_us", "verify_minus_plain_step_us")}))
    if args.cprofile:
        prof = cProfile.Profile()
        run_engine(engines[miss_name], steps[miss_name], prompt, args.steps, prof)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(args.sort).print_stats(40)
        print(buf.getvalue())
    if args.save_result:
        with open(args.save_result, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
