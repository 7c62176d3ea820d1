"""Typed pipeline parameters: pyannote's defaults, one OptionError per bad value, per-method names."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mlx_diar.clustering import AgglomerativeParameters, VBxParameters
from mlx_diar.errors import ModelDirError, OptionError
from mlx_diar.runtime.pipeline import (
    MultilabelSegmentationParameters,
    PipelineParameters,
    SegmentationParameters,
    SpeakerDiarizationPipeline,
)

BAD = [
    (VBxParameters, "threshold", "0.6"),
    (VBxParameters, "threshold", True),
    (VBxParameters, "threshold", math.nan),
    (VBxParameters, "threshold", math.inf),
    (VBxParameters, "Fa", 0.0),
    (VBxParameters, "Fa", -0.07),
    (VBxParameters, "Fa", None),
    (VBxParameters, "Fb", 0),
    (VBxParameters, "Fb", -math.inf),
    (VBxParameters, "Fb", "0.8"),
    (AgglomerativeParameters, "threshold", math.nan),
    (AgglomerativeParameters, "threshold", False),
    (AgglomerativeParameters, "method", "centroids"),
    (AgglomerativeParameters, "method", 1),
    (AgglomerativeParameters, "min_cluster_size", 0),
    (AgglomerativeParameters, "min_cluster_size", 12.0),
    (AgglomerativeParameters, "min_cluster_size", True),
    (SegmentationParameters, "min_duration_off", -0.1),
    (SegmentationParameters, "min_duration_off", math.nan),
    (SegmentationParameters, "min_duration_off", "0"),
    (MultilabelSegmentationParameters, "threshold", 1.5),
    (MultilabelSegmentationParameters, "threshold", math.inf),
    (PipelineParameters, "clustering", "KMeansClustering"),
    (PipelineParameters, "clustering", 0),
    (PipelineParameters, "segmentation_step", 0.0),
    (PipelineParameters, "segmentation_step", 1.5),
    (PipelineParameters, "segmentation_step", math.nan),
    (PipelineParameters, "embedding_exclude_overlap", "true"),
    (PipelineParameters, "embedding_exclude_overlap", 1),
    (PipelineParameters, "segmentation_batch_size", 0),
    (PipelineParameters, "segmentation_batch_size", 1.5),
    (PipelineParameters, "embedding_batch_size", -1),
    (PipelineParameters, "embedding_batch_size", True),
]


@pytest.mark.parametrize("cls, field, value", BAD)
def test_bad_value_is_an_option_error_naming_it(cls, field: str, value) -> None:
    message = re.escape(f"{cls.name(field)} = {value!r}: expected")
    with pytest.raises(OptionError, match=message):
        cls(**{field: value})
    with pytest.raises(OptionError, match=message):
        cls().update({field: value})


def test_values_are_coerced_to_their_types() -> None:
    params = VBxParameters(threshold=1, Fa=np.float32(0.5), Fb=np.int64(2))
    assert params == VBxParameters(threshold=1.0, Fa=0.5, Fb=2.0)
    assert all(type(v) is float for v in params.as_dict().values())
    assert type(AgglomerativeParameters(min_cluster_size=np.int64(3)).min_cluster_size) is int


@pytest.mark.parametrize("cls, name", [(VBxParameters, "method"), (AgglomerativeParameters, "Fa")])
def test_other_methods_parameters_are_unknown(cls, name: str) -> None:
    with pytest.raises(OptionError, match=rf"unknown parameter\(s\) clustering\.{name}; known: "):
        cls().update({name: 1})


def test_defaults_are_pyannotes() -> None:
    """community-1 runs with SpeakerDiarization.default_parameters(); its constructor values are config.yaml's."""
    pytest.importorskip("pyannote.audio")
    from pyannote.audio.pipelines.speaker_diarization import SpeakerDiarization

    defaults = SpeakerDiarization.default_parameters(None)
    assert VBxParameters().as_dict() == defaults["clustering"]
    assert SegmentationParameters().as_dict() == defaults["segmentation"]


# --------------------------------------------------------------------------- in the pipeline


@pytest.fixture(scope="module")
def ahc_model_dir(fixture_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlx_diar.conversion.convert import convert_pyannote_model

    return convert_pyannote_model(fixture_root, tmp_path_factory.mktemp("ahc") / "m", "full",
                                  pipeline_config="config-ahc.yaml")


def test_construction_validates_params(mlx_model_dir: Path) -> None:
    with pytest.raises(OptionError, match=r"embedding_batch_size = 0: expected an integer >= 1"):
        SpeakerDiarizationPipeline(model_path=mlx_model_dir, params={"embedding_batch_size": 0})
    with pytest.raises(OptionError, match=r"unknown parameter\(s\) batch_size"):
        SpeakerDiarizationPipeline(model_path=mlx_model_dir, params={"batch_size": 8})
    with pytest.raises(OptionError, match=r"clustering\.Fa = -1: expected a number > 0"):
        SpeakerDiarizationPipeline(model_path=mlx_model_dir, hyper_parameters={"clustering": {"Fa": -1}})


def test_instantiate_validates_and_changes_nothing_on_error(mlx_model_dir: Path) -> None:
    pipeline = SpeakerDiarizationPipeline(model_path=mlx_model_dir)
    before = pipeline.parameters()
    bad = [({"segmentation": {"min_duration_off": 0.5}, "clustering": {"Fb": math.nan}}, r"clustering\.Fb = nan"),
           ({"clustering": {"method": "average"}}, r"clustering\.method; known: clustering\.threshold"),
           ({"embedding": {"batch_size": 1}}, r"unknown pipeline parameter group 'embedding'"),
           ({"clustering": 0.5}, r"clustering = 0\.5: expected a mapping")]
    for hyper, message in bad:
        with pytest.raises(OptionError, match=message):
            pipeline.instantiate(hyper)
        assert pipeline.parameters() == before
    pipeline.instantiate({"clustering": {"threshold": 0.5}})
    assert pipeline.clustering().params == VBxParameters(threshold=0.5)


def test_saved_config_is_validated(mlx_model_dir: Path) -> None:
    from mlx_diar.conversion.model_io import load_model

    models = load_model(mlx_model_dir)
    models.config["pipeline"]["hyper_parameters"]["clustering"]["Fa"] = "0.07"
    with pytest.raises(ModelDirError, match=r"config\.json: pipeline clustering\.Fa = '0\.07': expected a number"):
        SpeakerDiarizationPipeline(models=models)


def test_agglomerative_config_has_only_its_parameters(ahc_model_dir: Path, mlx_model_dir: Path) -> None:
    pipeline = SpeakerDiarizationPipeline(model_path=ahc_model_dir)
    assert pipeline.parameters()["params"]["clustering"] == {
        "threshold": 0.7045654963945799, "method": "centroid", "min_cluster_size": 12}
    assert pipeline.clustering().params == pipeline.clustering_parameters
    # switching the method of a VBx model starts from the other method's defaults
    switched = SpeakerDiarizationPipeline(model_path=mlx_model_dir, params={"clustering": "AgglomerativeClustering"})
    assert switched.parameters()["params"]["clustering"] == AgglomerativeParameters().as_dict()


def test_cli_print_params_of_agglomerative_config(ahc_model_dir: Path, sample_10s, tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    sf.write(wav, sample_10s[: 16000 * 3], 16000)
    proc = subprocess.run([sys.executable, "-m", "mlx_diar", "diarize", str(wav), "--model", str(ahc_model_dir),
                           "--print-params", "--param", "clustering.min_cluster_size=5"],
                          capture_output=True, text=True, check=True)
    params, _ = json.JSONDecoder().raw_decode(proc.stderr)
    assert params["clustering"] == "AgglomerativeClustering"
    assert params["params"]["clustering"] == {"threshold": 0.7045654963945799, "method": "centroid",
                                              "min_cluster_size": 5}
    proc = subprocess.run([sys.executable, "-m", "mlx_diar", "diarize", str(wav), "--model", str(ahc_model_dir),
                           "--fa", "0.1"], capture_output=True, text=True)
    assert proc.returncode == 1 and "clustering.Fa" in proc.stderr and "Traceback" not in proc.stderr
