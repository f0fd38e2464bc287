"""``vllm-core serve``'s image flags: bad values are usage errors before any model loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vllm_core.entrypoints.cli.serve import limit_mm_per_prompt


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "vllm_core.entrypoints.cli.main", "serve", "no-such-model", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_limit_mm_per_prompt_values() -> None:
    import click

    assert limit_mm_per_prompt('{"image": 2}') == {"image": 2}
    assert limit_mm_per_prompt({"image": 0, "video": 1}) == {"image": 0, "video": 1}
    assert limit_mm_per_prompt(None) is None
    for bad in ('{"image": -1}', '{"image": "2"}', '[2]', '{"image": true}', "{image: 2}"):
        with pytest.raises(click.BadParameter):
            limit_mm_per_prompt(bad)


def test_bad_flags_are_usage_errors(tmp_path: Path) -> None:
    r = serve("--limit-mm-per-prompt", '{"image": -1}')
    assert r.returncode == 2 and "--limit-mm-per-prompt" in r.stderr and "counts >= 0" in r.stderr, r.stderr
    r = serve("--limit-mm-per-prompt", "image=2")
    assert r.returncode == 2 and "not valid JSON" in r.stderr, r.stderr
    r = serve("--allowed-local-media-path", str(tmp_path / "missing"))
    assert r.returncode == 2 and "--allowed-local-media-path" in r.stderr and "does not exist" in r.stderr, r.stderr
    (tmp_path / "file").write_text("x")
    r = serve("--allowed-local-media-path", str(tmp_path / "file"))
    assert r.returncode == 2 and "is a file" in r.stderr, r.stderr
    r = serve("--image-fetch-timeout", "0")
    assert r.returncode == 2 and "--image-fetch-timeout" in r.stderr, r.stderr
