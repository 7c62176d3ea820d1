"""pyannote's telemetry is off unless asked for (issue 12, item 6); speaker counts are validated (item 4)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from mlx_diar.errors import OptionError
from mlx_diar.runtime.pipeline import MAX_SPEAKERS, set_num_speakers
from mlx_diar.conversion.trust import set_pyannote_telemetry

def test_pyannote_telemetry_is_off_after_import_mlx_diar() -> None:
    """A fresh interpreter, pyannote's own default (on), pyannote imported after mlx_diar."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLX_DIAR_PYANNOTE_TELEMETRY", "PYANNOTE_METRICS_ENABLED")}
    code = ("import mlx_diar; from pyannote.audio.telemetry.metrics import is_metrics_enabled;"
            "print(is_metrics_enabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("ours, pyannote_setting, enabled", [
    (None, "true", False),  # a shell that turned pyannote's on: ours decides
    ("0", None, False),
    ("1", None, True),
    ("true", "false", True),
])
def test_pyannote_telemetry_is_opt_in(monkeypatch, ours, pyannote_setting, enabled) -> None:
    from pyannote.audio.telemetry.metrics import is_metrics_enabled

    for name, value in (("MLX_DIAR_PYANNOTE_TELEMETRY", ours), ("PYANNOTE_METRICS_ENABLED", pyannote_setting)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert set_pyannote_telemetry() is enabled and is_metrics_enabled() is enabled
    monkeypatch.undo()
    set_pyannote_telemetry()


@pytest.mark.parametrize("kwargs, message", [
    ({"num_speakers": 0}, "num_speakers = 0 must be between 1 and 1000 (leave it unset"),
    ({"min_speakers": 0}, "min_speakers = 0 must be between"),
    ({"max_speakers": -1}, "max_speakers = -1 must be between"),
    ({"num_speakers": MAX_SPEAKERS + 1}, f"num_speakers = {MAX_SPEAKERS + 1} must be between"),
    ({"num_speakers": 2.0}, "num_speakers must be an integer, got 2.0"),
    ({"num_speakers": True}, "num_speakers must be an integer"),
    ({"min_speakers": 3, "max_speakers": 2}, "min_speakers must be smaller than (or equal to) max_speakers"),
    ({"num_speakers": 1, "min_speakers": 2}, "num_speakers = 1 contradicts"),
])
def test_speaker_counts_are_checked(kwargs, message) -> None:
    with pytest.raises(OptionError) as e:
        set_num_speakers(**kwargs)
    assert message in str(e.value)


@pytest.mark.parametrize("kwargs, expected", [
    ({}, (None, 1, np.inf)), ({"num_speakers": 3}, (3, 3, 3)), ({"min_speakers": 2, "max_speakers": 2}, (2, 2, 2)),
    ({"min_speakers": 2}, (None, 2, np.inf)), ({"num_speakers": np.int64(2)}, (2, 2, 2)),
])
def test_valid_counts_match_pyannote(kwargs, expected) -> None:
    from pyannote.audio.pipelines.utils.diarization import set_num_speakers as reference

    assert set_num_speakers(**kwargs) == expected == reference(**kwargs)
