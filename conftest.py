"""Project-wide pytest setup: the `--benchmark` flag."""

from __future__ import annotations

import pytest

import mlx_diar  # noqa: F401  (first: loads OpenBLAS before anything imports mlx)


def pytest_addoption(parser: pytest.Parser) -> None:
    # pytest-benchmark has no `--benchmark` of its own; benchmarks run only with it.
    parser.addoption("--benchmark", action="store_true", default=False,
                     help="also run speed/memory benchmarks (tests using the `benchmark` fixture)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without `--benchmark`, deselect the benchmarks (tests using pytest-benchmark's `benchmark` fixture)."""
    if config.getoption("--benchmark"):
        return
    benchmarks = [item for item in items if "benchmark" in getattr(item, "fixturenames", ())]
    if benchmarks:
        config.hook.pytest_deselected(items=benchmarks)
        items[:] = [item for item in items if item not in benchmarks]
