"""Project-wide pytest setup: the `--benchmark` flag."""

from __future__ import annotations

import sys
import time
from pathlib import Path

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


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # benchmark runs save pytest-benchmark JSON under reports/ (compare two with `pytest-benchmark compare`)
    if config.getoption("--benchmark") and getattr(config.option, "benchmark_json", "unset") is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        config.option.benchmark_json = Path(__file__).parent / "reports" / f"benchmark-{stamp}.json"


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    module = sys.modules.get("tests.test_benchmarks")
    if not config.getoption("--benchmark") or module is None:
        return
    if module.RATIOS:
        terminalreporter.write_sep("-", "MLX vs pyannote, same run (speed ratio = pyannote s / MLX s)")
        terminalreporter.write_line(module.ratio_table(module.RATIOS))
    if module.VARIANT_ROWS:
        terminalreporter.write_sep("-", f"variants x kernel routes, medians of {module.VARIANT_ROUNDS} interleaved "
                                        "runs (ratio = pyannote s / MLX s; vs f32 = float32 exact s / variant s)")
        terminalreporter.write_line(module.variant_table(module.VARIANT_ROWS))
    if (module.RATIOS or module.VARIANT_ROWS) and config.option.benchmark_json:
        terminalreporter.write_line(f"pytest-benchmark JSON: {config.option.benchmark_json}")
