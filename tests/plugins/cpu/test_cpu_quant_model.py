"""SmolLM2's own GGUF (Q4_1 linear layers, a Q8_0 tied head) on the quantized path against the
dequantized one: ``quantization="gguf"`` (the default for .gguf files on the cpu platform) vs
``"none"``.

Teacher-forced: the dequantized engine generates 64 greedy tokens for each of 32 prompts; the
quantized engine reads prompt + those tokens once (``prompt_logprobs=1``) and its top-1 at each
of the 64 positions is compared with the token the dequantized path chose there. Agreement must
be >= 98% (measured here: see benchmarks/results/cpu_quant_2026-12-07.md). Also checked: the
layers are packed, the weights take less memory, the quantized engine's own greedy decode
(recorded plans) starts as the dequantized one does, and ``quantization="gguf"`` where it
cannot run is an error naming the reason. About 40 s on 2 cores.
"""

from __future__ import annotations

import pytest

from tests.conftest import import_or_require, require_or_skip
from vllm_core import LLM, SamplingParams

import_or_require("vllm_cpu", "cpu")

from vllm_cpu.gguf_quant import GGUFQuantExtension, weight_bytes  # noqa: E402
from vllm_cpu.kernels import GGUF_BF16_ROWS, REQUIRED_CPU_FLAGS, cpu_flags  # noqa: E402

SUBJECTS = ["The history of Rome", "Photosynthesis", "A good night's sleep", "The Python language",
            "Volcanoes", "The French Revolution", "Machine learning", "The ocean's tides"]
FORMS = ["{} is", "Here is a short explanation of {}:", "Q: What should I know about {}?\nA:",
         "Write one paragraph about {}."]
PROMPTS = [f.format(s) for s in SUBJECTS for f in FORMS]
NEW_TOKENS = 64

@pytest.fixture(scope="module")
def engines(default_model_path: str) -> tuple[LLM, LLM]:
    missing = [f for f in REQUIRED_CPU_FLAGS if f not in cpu_flags()]
    if missing:
        require_or_skip("cpu-kernels", f"this CPU lacks {missing}")
    common = dict(dtype="float32", device="cpu", max_model_len=512, num_gpu_blocks_override=160,
                  use_tqdm_on_load=False)
    dense = LLM(default_model_path, quantization="none", **common)
    quant = LLM(default_model_path, **common)  # the default: gguf
    return dense, quant

def _extension(llm: LLM) -> GGUFQuantExtension | None:
    ext = llm.llm_engine.core.runner.extensions.get(GGUFQuantExtension.name)  # type: ignore[attr-defined]
    return ext if isinstance(ext, GGUFQuantExtension) else None

def test_layers_packed_and_smaller(engines: tuple[LLM, LLM]) -> None:
    dense, quant = engines
    assert _extension(dense) is None
    ext = _extension(quant)
    assert ext is not None
    qtypes = {t for qw in ext.packed.values() for t in qw.qtypes}
    assert len(ext.packed) == 30 * 4 + 1 and qtypes == {"Q4_1", "Q8_0"}  # qkv, o, gate_up, down; the head
    model_bytes = weight_bytes(dense.llm_engine.core.runner.model)  # type: ignore[attr-defined]
    assert ext.bytes_held < 0.45 * model_bytes, (ext.bytes_held, model_bytes)

def test_teacher_forced_top1_agreement(engines: tuple[LLM, LLM]) -> None:
    dense, quant = engines
    greedy = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    ref = dense.generate(PROMPTS, greedy, use_tqdm=False)
    forced = [{"prompt_token_ids": o.prompt_token_ids + o.outputs[0].token_ids} for o in ref]
    outs = quant.generate(forced, SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1),
                          use_tqdm=False)
    agree = total = 0
    for r, o in zip(ref, outs):
        plp, start = o.prompt_logprobs, len(r.prompt_token_ids)
        assert plp is not None
        for j, token in enumerate(r.outputs[0].token_ids):
            entry = plp[start + j]
            assert entry is not None
            top1 = min(entry, key=lambda t: entry[t].rank)  # type: ignore[index]
            agree += top1 == token
            total += 1
    assert total == len(PROMPTS) * NEW_TOKENS
    rate = agree / total
    print(f"teacher-forced top-1 agreement: {agree}/{total} = {rate:.4f}")
    assert rate >= 0.98, f"top-1 agreement {rate:.4f} < 0.98"

def test_quantized_decode_starts_like_dense(engines: tuple[LLM, LLM]) -> None:
    """Free-running greedy decode on the quantized path (recorded plans, batch of 8): the first
    tokens agree with the dequantized path's (later ones may drift after a near tie)."""
    dense, quant = engines
    greedy = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
    a = dense.generate(PROMPTS[:8], greedy, use_tqdm=False)
    b = quant.generate(PROMPTS[:8], greedy, use_tqdm=False)
    same = sum(x.outputs[0].token_ids == y.outputs[0].token_ids for x, y in zip(a, b))
    assert same >= 7, [(x.outputs[0].token_ids, y.outputs[0].token_ids) for x, y in zip(a, b)]

def test_bfloat16_prefill_equals_dense(default_model_path: str) -> None:
    """In bfloat16 a step of at least GGUF_BF16_ROWS rows dequantizes the packed blocks to bf16
    and runs the dense kernel: a 29-token prompt's logprobs (every layer and the head on 29 rows)
    equal the dequantized engine's exactly, while the layers stay packed."""
    prompt = ("Write one paragraph about the history of Rome, its emperors, its roads, its aqueducts "
              "and its fall, in plain words for a child.")
    params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=3)
    common = dict(dtype="bfloat16", device="cpu", max_model_len=256, num_gpu_blocks_override=32,
                  use_tqdm_on_load=False)
    outs = []
    for quantization in ("none", "gguf"):
        llm = LLM(default_model_path, quantization=quantization, **common)
        assert (_extension(llm) is not None) == (quantization == "gguf")
        outs.append(llm.generate([prompt], params, use_tqdm=False)[0])
        del llm
    dense, quant = outs
    assert len(dense.prompt_token_ids) >= GGUF_BF16_ROWS
    assert quant.prompt_logprobs == dense.prompt_logprobs


def test_gguf_where_it_cannot_run_is_an_error(smol_vocab_model: str) -> None:
    with pytest.raises(Exception, match=r"quantization='gguf' cannot run: .*not a \.gguf file"):
        LLM(smol_vocab_model, device="cpu", quantization="gguf", max_model_len=64, num_gpu_blocks_override=8,
            use_tqdm_on_load=False)

def test_unknown_quantization_is_refused(default_model_path: str) -> None:
    with pytest.raises(Exception, match="quantization"):
        LLM(default_model_path, device="cpu", quantization="q4", use_tqdm_on_load=False)

