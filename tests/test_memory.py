"""`python -m harness memory`: the MLX pipeline's own peak memory, measured in a fresh process."""

from __future__ import annotations

import resource

from harness.memory import curve_frame, curve_table, memory_curve
from mlx_diar.runtime.pipeline import cpu_lanes


def test_memory_curve_measures_the_child_alone(tmp_path) -> None:
    """The child's peak is its own: this pytest process (torch, pyannote loaded) is far larger, and
    getrusage's ru_maxrss would carry that over fork + exec."""
    rows = memory_curve([0.25], "exact", workdir=tmp_path)
    row = rows[0]
    parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert row["imports_mb"] < row["loaded_mb"] < row["peak_mb"]
    assert row["imports_mb"] < min(parent_mb, 400), (row, parent_mb)
    assert row["speakers"] >= 1 and row["seconds"] > 0
    # the segmentation helper processes are counted: their peaks added (an upper bound), and the
    # sum sampled while the pipeline ran never above it
    assert len(row["helpers_mb"]) == cpu_lanes() - 1 and all(mb > 0 for mb in row["helpers_mb"])
    assert row["peak_mb"] == row["process_mb"] + sum(row["helpers_mb"])
    assert 0 < row["sampled_mb"] <= row["peak_mb"] + 1
    assert "| 0.25 | exact |" in curve_table(curve_frame(rows))
