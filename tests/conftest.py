"""Test configuration shared by every test module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.helpers.redis_server import URL_VARIABLE, RedisServer

# What tests leave for a person to look at (the console's screenshots, a received trace); gitignored, kept after
# the run and named in its summary.
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# No per-example deadline: the machine is shared, and a timing bound is not a behaviour. Under CI (CI=true) the
# examples are derived from each test's name and no database carries failures from run to run, so a submission
# never fails by chance; locally every run draws afresh and remembers what failed.
settings.register_profile("gateway", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "gateway")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="also run the long soak test (tests marked 'soak')")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ARTIFACTS.is_dir() and any(ARTIFACTS.iterdir()):
        terminalreporter.write_line(f"test artifacts (screenshots, traces): {ARTIFACTS}")


@pytest.fixture
def artifacts() -> Path:
    """Where a test keeps what a person should be able to look at after the run."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module", params=["gateway", "httpx"])
def upstream_transport(request: pytest.FixtureRequest) -> str:
    """How the gateway reaches its providers (``providers.*.transport``): its own transport, or httpx's,
    the escape hatch. An end-to-end module whose gateway config takes this runs over each in turn.

    Where they differ, the tests show the difference harmless: httpx's hands a body over one HTTP
    chunk per read (the gateway's, all that one socket read brought), and the upstream's pieces are
    its HTTP chunks, so the tests that split events across pieces, down to one byte each, cover it.
    """
    return str(request.param)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis shared by the test run: the one .ci/run started, else one of the run's own."""
    if url := os.environ.get(URL_VARIABLE):
        yield url
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A real Redis for one test alone, which it may stop, pause and start again."""
    with RedisServer() as server:
        yield server
