"""Test configuration shared by every test module."""

from __future__ import annotations

import pytest
from hypothesis import settings

# No per-example deadline: the machine is shared, and a timing bound is not a behaviour.
settings.register_profile("gateway", deadline=None)
settings.load_profile("gateway")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="also run the long soak test (tests marked 'soak')")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
