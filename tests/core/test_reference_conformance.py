"""Sanity check of the conformance kit: the reference platform passes it against itself, and
the pytest plugin's ``--vllm-platform`` option resolves the platform (or skips without it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vllm_core.platforms.interface import Platform
from vllm_core.platforms.reference import ReferencePlatform
from vllm_core.testing.conformance import AttentionConformance, EndToEndConformance, OpsConformance


@pytest.fixture
def conformance_platform() -> Platform:
    return ReferencePlatform()


class TestReferenceAttention(AttentionConformance):
    pass


class TestReferenceOps(OpsConformance):
    pass


class TestReferenceEndToEnd(EndToEndConformance):
    pass


PLUGIN_PROBE = '''
def test_platform(platform_under_test):
    assert platform_under_test.name == "reference"
'''


def _run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PLUGIN_PROBE)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path), *args],
        capture_output=True, text=True, cwd=tmp_path,
    )


def test_plugin_skips_without_the_option(tmp_path: Path) -> None:
    result = _run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout and "--vllm-platform" in result.stdout


def test_plugin_resolves_the_named_platform(tmp_path: Path) -> None:
    result = _run_pytest(tmp_path, "--vllm-platform", "reference")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
