"""The reference runner: pyannote.audio's pipeline with every stage recorded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlx_diar.runtime.audio import SAMPLE_RATE
from reference.runner import load_bundle, save_bundle

SEGMENTATION_LAYERS = {
    "sincnet.wav_norm1d": (1, 10 * SAMPLE_RATE),
    "sincnet.conv1d.0": (80, 15975),
    "sincnet.norm1d.2": (60, 589),
    "lstm.0": (589, 256),
    "lstm.3": (589, 256),
    "lstm": (589, 256),
    "linear.1": (589, 128),
    "classifier": (589, 7),
    "activation": (589, 7),
}
EMBEDDING_LAYERS = {
    "fbank": (998, 80),
    "resnet.conv1": (32, 80, 998),
    "resnet.layer1": (32, 80, 998),
    "resnet.layer4": (256, 10, 125),
    "resnet.pool": (5120,),
    "resnet.seg_1": (256,),
}


def test_bundle_holds_named_layers_and_stages(reference_run_10s, tmp_path: Path) -> None:
    path = save_bundle(reference_run_10s, tmp_path / "b.npz")
    arrays, meta = load_bundle(path)
    for name, shape in SEGMENTATION_LAYERS.items():
        assert arrays[f"layers/segmentation/{name}"].shape[1:] == shape, name
    for name, shape in EMBEDDING_LAYERS.items():
        assert arrays[f"layers/embedding/{name}"].shape[1:] == shape, name
    # the layer inputs are the exact chunks/masks that produced them
    assert arrays["inputs/segmentation"].shape[1:] == (1, 10 * SAMPLE_RATE)
    assert arrays["inputs/embedding_weights"].shape[1:] == (589,)
    num_chunks = arrays["segmentation"].shape[0]
    assert arrays["segmentation"].shape == (num_chunks, 589, 3)
    assert arrays["embeddings"].shape == (num_chunks, 3, 256)
    assert arrays["hard_clusters"].shape == (num_chunks, 3)
    assert arrays["speaker_counting"].ndim == 2
    assert set(meta["timings"]) == {"segmentation", "speaker_counting", "embeddings", "clustering",
                                    "reconstruction", "total"}
    assert meta["rttm"] == reference_run_10s.rttm()
    assert meta["parameters"]["params"]["clustering"]["threshold"] == 0.6
    assert len(arrays["speaker_embeddings"]) == len(meta["labels"])


def test_clustering_is_recorded_for_the_call_only(reference_pipeline, reference_run_10s) -> None:
    """The recording wrapper leaves pyannote's pipeline as it was: same clustering object, same class."""
    from pyannote.audio.pipelines.clustering import VBxClustering

    assert type(reference_pipeline.clustering) is VBxClustering
    assert "clustering" not in vars(reference_pipeline)
    assert reference_run_10s.meta["timings"]["clustering"] > 0


def test_record_clustering_restores_the_pipeline_after_an_error() -> None:
    from pyannote.pipeline import Pipeline
    from pyannote.pipeline.parameter import Uniform

    from reference.runner import record_clustering

    class Clustering(Pipeline):
        def __init__(self) -> None:
            super().__init__()
            self.threshold = Uniform(0.0, 1.0)

        def __call__(self, labels):
            return np.asarray(labels), None, np.eye(2)

    class Diarization(Pipeline):
        def __init__(self) -> None:
            super().__init__()
            self.clustering = Clustering()

    pipeline = Diarization().instantiate({"clustering": {"threshold": 0.3}})
    original = pipeline.clustering
    with pytest.raises(RuntimeError, match="later stage"):
        with record_clustering(pipeline) as recorder:
            assert pipeline.clustering.threshold == 0.3  # attributes reach the wrapped clustering
            pipeline.clustering([0, 1, 1])
            raise RuntimeError("a later stage failed")
    assert pipeline.clustering is original and "clustering" not in vars(pipeline)
    assert pipeline.parameters(instantiated=True) == {"clustering": {"threshold": 0.3}}
    np.testing.assert_array_equal(recorder.arrays["hard_clusters"], [0, 1, 1])
    np.testing.assert_array_equal(recorder.arrays["centroids"], np.eye(2))


def test_recorded_lstm_layers_chain_to_the_monolithic_output(reference_run_10s) -> None:
    arrays = reference_run_10s.arrays
    np.testing.assert_allclose(arrays["layers/segmentation/lstm.3"], arrays["layers/segmentation/lstm"], atol=1e-6)


def test_der_against_sample_rttm_is_finite(reference_run_10s, sample) -> None:
    from harness.metrics import reference_for, score, uem_for

    _, rttm = sample
    reference = reference_for(rttm, "sample")
    result = score(reference, reference_run_10s.diarization, uem_for(10.0))
    assert np.isfinite(result["der"]) and np.isfinite(result["jer"])
    assert 0.0 <= result["der"] and result["scored_seconds"] > 0
    perfect = score(reference, reference, uem_for(10.0))
    assert perfect["der"] == 0.0


def test_cli_writes_rttm(tmp_path: Path, sample_10s, fixture_root: Path) -> None:
    import soundfile as sf

    wav = tmp_path / "clip.wav"
    sf.write(wav, sample_10s[5 * SAMPLE_RATE:], SAMPLE_RATE)  # speech starts at 6.7 s
    out = tmp_path / "clip.rttm"
    subprocess.run([sys.executable, "-m", "reference", "diarize", str(wav), "--checkpoint", str(fixture_root),
                    "--rttm", str(out), "--no-layers"], check=True, capture_output=True, text=True)
    lines = out.read_text().splitlines()
    assert lines and all(line.startswith("SPEAKER clip 1 ") for line in lines)


def test_cli_bad_audio_is_a_clear_error(tmp_path: Path) -> None:
    """Through the harness's form, whose default checkpoint (the fixture) is only built after the audio loads."""
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....not audio")
    proc = subprocess.run([sys.executable, "-m", "harness", "reference", "diarize", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "broken.wav" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_needs_a_checkpoint(tmp_path: Path) -> None:
    """The reference package knows no fixture pipeline (it is the harness's): `--checkpoint` is required."""
    proc = subprocess.run([sys.executable, "-m", "reference", "diarize", str(tmp_path / "a.wav")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--checkpoint" in proc.stderr and "Traceback" not in proc.stderr
