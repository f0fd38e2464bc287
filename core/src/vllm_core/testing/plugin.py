"""pytest plugin of the conformance kit (entry point ``pytest11: vllm_core_conformance``).

``pytest --vllm-platform NAME`` resolves platform NAME for the ``platform_under_test`` fixture.
Without the option the fixture skips, so ordinary test runs are unaffected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from vllm_core.platforms.interface import Platform

OPTION = "--vllm-platform"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vllm_core", "vllm-core conformance kit")
    group.addoption(
        OPTION,
        action="store",
        default=None,
        metavar="NAME",
        help="run the vllm-core conformance kit against platform NAME (cpu, cuda, ...)",
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    name = config.getoption(OPTION)
    return f"vllm-core conformance platform: {name}" if name else None


@pytest.fixture(scope="session")
def platform_under_test(pytestconfig: pytest.Config) -> Platform:
    """The platform named by ``--vllm-platform`` (installed and available, else an error)."""
    name = pytestconfig.getoption(OPTION)
    if not name:
        pytest.skip(f"conformance kit: pass {OPTION} NAME to run it against a platform")
    from vllm_core.platforms import resolve_platform

    return resolve_platform(name)


@pytest.fixture
def conformance_platform(platform_under_test: Platform) -> Platform:
    """The platform the conformance classes test; override it in a test class or conftest to
    name one without the command-line option."""
    return platform_under_test
