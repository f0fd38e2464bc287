"""lm-evaluation-harness against the server (its ``local-completions`` model, loglikelihood via
``echo`` + ``logprobs`` + ``max_tokens=0``) on a local JSON multiple-choice task (no hub): the
accuracy equals the offline engine's on the same task, choice by choice."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import import_or_require
from tests.server.conftest import TINY_ENGINE, RunningServer

DOCS = [
    {"question": "The sky is", "choices": [" blue", " green", " loud"], "answer": 0},
    {"question": "Two plus two is", "choices": [" four", " seven"], "answer": 0},
    {"question": "Paris is the capital of", "choices": [" Spain", " France", " Peru"], "answer": 1},
    {"question": "Water freezes at zero degrees", "choices": [" Celsius", " Kelvin"], "answer": 0},
    {"question": "A cat says", "choices": [" woof", " moo", " meow"], "answer": 2},
    {"question": "The opposite of hot is", "choices": [" cold", " tall", " fast"], "answer": 0},
]

TASK = """task: vllm_core_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
target_delimiter: ""
metric_list:
  - metric: acc
"""


def _offline_scores(model: str, tokenizer: Any) -> list[list[float]]:
    """The offline engine's loglikelihood of each choice after its question."""
    from vllm_core import LLM, SamplingParams

    llm = LLM(model, use_tqdm_on_load=False, **TINY_ENGINE)
    all_scores = []
    for doc in DOCS:
        ctx = tokenizer.encode(doc["question"], add_special_tokens=False)
        scores = []
        for choice in doc["choices"]:
            whole = tokenizer.encode(doc["question"] + choice, add_special_tokens=False)
            (out,) = llm.generate({"prompt_token_ids": whole}, SamplingParams(max_tokens=1, prompt_logprobs=1),
                                  use_tqdm=False)
            plp = out.prompt_logprobs
            scores.append(sum(plp[i][whole[i]].logprob for i in range(len(ctx), len(whole))))
        all_scores.append(scores)
    del llm
    return all_scores


def test_lm_eval_accuracy_equals_offline(server: RunningServer, tiny_chat_model: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    lm_eval = import_or_require("lm_eval", "lm-eval")
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "local_mc.yaml").write_text(TASK.format(data=data))
    results = lm_eval.simple_evaluate(
        model="local-completions",
        model_args=(f"model={server.model},base_url={server.url}/v1/completions,tokenizer_backend=huggingface,"
                    f"tokenizer={tiny_chat_model},num_concurrent=1,max_retries=1"),
        tasks=["vllm_core_local_mc"], task_manager=TaskManager(include_path=str(tasks)), log_samples=True,
    )
    acc = results["results"]["vllm_core_local_mc"]["acc,none"]
    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    offline = _offline_scores(tiny_chat_model, tok)
    served = [[float(r[0][0]) for r in s["resps"]]
              for s in sorted(results["samples"]["vllm_core_local_mc"], key=lambda s: s["doc_id"])]
    assert [len(x) for x in served] == [len(x) for x in offline]
    for got, want in zip(served, offline):
        assert got == pytest.approx(want, abs=1e-3)
    picks = [max(range(len(x)), key=lambda k: x[k]) for x in offline]
    offline_acc = sum(p == d["answer"] for p, d in zip(picks, DOCS)) / len(DOCS)
    assert math.isclose(acc, offline_acc)
