"""Run the original pyannote.audio SpeakerDiarization and record every stage into one bundle.

Mirrors what a user gets from `Pipeline.from_pretrained(...)(file)`, with the pipeline
parameters of the checkpoint's config.yaml. pyannote is given only a checked, staged copy
of the pipeline directory (`mlx_diar.conversion.trust.stage_pipeline`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mlx_diar.runtime.audio import SAMPLE_RATE
from mlx_diar.fsutil import atomic_path
from mlx_diar.provenance import package_versions
from mlx_diar.conversion.sources import PipelineSource, resolve_pipeline
from mlx_diar.conversion.trust import stage_pipeline
from reference.layers import embedding_layers, segmentation_float64, segmentation_layers


@dataclasses.dataclass
class ReferenceRun:
    """Everything one pyannote run produced: arrays, annotations, timings and metadata."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    diarization: Any  # pyannote.core.Annotation
    exclusive_diarization: Any

    def rttm(self, exclusive: bool = False) -> str:
        annotation = self.exclusive_diarization if exclusive else self.diarization
        buffer = io.StringIO()
        annotation.write_rttm(buffer)
        return buffer.getvalue()


def load_pipeline(source: str | Path, config: str | None = None, token: str | None = None):
    """Load pyannote's pipeline from a HF id or local directory (optionally another config file in it).

    pyannote never reads the directory itself: its config is checked and its files are
    copied into a private temporary directory and vetted there (`mlx_diar.conversion.trust`); pyannote
    builds the pipeline from that copy, which is removed once everything is in memory.
    """
    resolved = resolve_pipeline(source, token=token, config=config)
    with tempfile.TemporaryDirectory(prefix="mlx-diar-vetted-") as tmp:
        staged = stage_pipeline(resolved, Path(tmp))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pyannote.audio import Pipeline

            pipeline = Pipeline.from_pretrained(staged)
    pipeline._mlx_diar_source = resolved
    return pipeline


def pipeline_parameters(pipeline) -> dict[str, Any]:
    """Constructor and instantiated parameters of a pyannote SpeakerDiarization pipeline."""
    return {
        "clustering": pipeline.klustering,
        "embedding_batch_size": pipeline.embedding_batch_size,
        "segmentation_batch_size": pipeline.segmentation_batch_size,
        "embedding_exclude_overlap": pipeline.embedding_exclude_overlap,
        "segmentation_step": pipeline.segmentation_step,
        "params": pipeline.parameters(instantiated=True),
    }


def _window(swf) -> dict[str, float]:
    sw = swf.sliding_window
    return {"start": sw.start, "duration": sw.duration, "step": sw.step}


@dataclasses.dataclass(frozen=True)
class StageTimings:
    """Wall-clock seconds of each stage of one pyannote call (`meta["timings"]` of a bundle)."""

    segmentation: float
    speaker_counting: float
    embeddings: float
    clustering: float
    reconstruction: float
    total: float

    @classmethod
    def from_marks(cls, marks: dict[str, float], start: float, end: float, clustering: float) -> StageTimings:
        """Stage durations from the times pyannote's hook reported each stage done."""
        t_seg = marks.get("segmentation", end)
        t_count = marks.get("speaker_counting", t_seg)
        t_emb = marks.get("embeddings", t_count)
        return cls(segmentation=t_seg - start, speaker_counting=t_count - t_seg, embeddings=t_emb - t_count,
                   clustering=clustering, reconstruction=end - t_emb - clustering, total=end - start)


class StageRecorder:
    """pyannote's `hook` argument: keeps each stage's final output and when it was ready."""

    ARRAY_STEPS = ("segmentation", "speaker_counting", "discrete_diarization")

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.marks: dict[str, float] = {}

    def __call__(self, step: str, artefact, file=None, total=None, completed=None) -> None:
        if artefact is None or completed is not None:  # progress calls, not a stage's output
            return
        self.marks[step] = time.perf_counter()
        if step in self.ARRAY_STEPS:
            self.arrays[step] = np.asarray(artefact.data)
            self.arrays[f"{step}.window"] = np.array(list(_window(artefact).values()))
        elif step == "embeddings":
            self.arrays["embeddings"] = np.asarray(artefact)


class RecordingClustering:
    """Wraps a pyannote clustering: same call, also times it and keeps its hard clusters and centroids.

    pyannote's hook sees no clustering output, so `record_clustering` puts this wrapper in front
    of the pipeline's clustering for one call.
    """

    def __init__(self, clustering) -> None:
        self.clustering = clustering
        self.seconds = 0.0
        self.arrays: dict[str, np.ndarray] = {}

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        hard, soft, centroids = self.clustering(*args, **kwargs)
        self.seconds = time.perf_counter() - t0
        self.arrays["hard_clusters"] = np.array(hard)  # a copy: pyannote marks inactive speakers in place
        if centroids is not None:
            self.arrays["centroids"] = np.asarray(centroids)
        return hard, soft, centroids

    def __getattr__(self, name: str):
        return getattr(self.clustering, name)


@contextlib.contextmanager
def record_clustering(pipeline) -> Iterator[RecordingClustering]:
    """Route `pipeline.clustering(...)` through a `RecordingClustering` inside the block.

    pyannote.pipeline finds sub-pipelines through `__getattr__`; an instance attribute of the
    same name takes precedence and leaves its registry (parameters, instantiate) untouched.
    """
    wrapper = RecordingClustering(pipeline.clustering)
    object.__setattr__(pipeline, "clustering", wrapper)
    try:
        yield wrapper
    finally:
        object.__delattr__(pipeline, "clustering")


class ModelTaps:
    """Forward hooks on pyannote's two models, cheap enough for the timed run.

    Keeps the raw segmentation scores of every batch and, with `layer_items`, the inputs of the
    first segmentation and embedding batches; `layer_arrays` replays the models on those inputs
    afterwards to record every named layer.
    """

    def __init__(self, pipeline, layer_items: int) -> None:
        self.seg_model = pipeline._segmentation.model
        self.emb_model = pipeline._embedding.model_
        self.layer_items = layer_items
        self.raw_scores: list[np.ndarray] = []
        self.inputs: dict[str, Any] = {}
        self._handles: list = []
        if layer_items:
            # pyannote probes the embedding model with random inputs to find its minimum input
            # length (cached); do it now so that the first recorded batch is a real one. Its statistics
            # pooling of the shortest probes warns from torch's std(): expected there, and harmless.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"std\(\): degrees of freedom is <= 0", category=UserWarning,
                                        module=r"pyannote\.audio\.models\.blocks\.pooling")
                _ = pipeline._embedding.min_num_samples

    def _keep_scores(self, module, inputs, output) -> None:
        self.raw_scores.append(output.detach().float().numpy())

    def _keep_segmentation_input(self, module, inputs) -> None:
        self.inputs.setdefault("segmentation", inputs[0][: self.layer_items].detach().clone())

    def _keep_embedding_input(self, module, args, kwargs) -> None:
        if "embedding" not in self.inputs and kwargs.get("weights") is not None:
            self.inputs["embedding"] = args[0].detach().clone()
            self.inputs["embedding_weights"] = kwargs["weights"].detach().clone()

    def __enter__(self) -> ModelTaps:
        self._handles.append(self.seg_model.register_forward_hook(self._keep_scores))
        if self.layer_items:
            self._handles.append(self.seg_model.register_forward_pre_hook(self._keep_segmentation_input))
            self._handles.append(self.emb_model.register_forward_pre_hook(self._keep_embedding_input,
                                                                          with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def arrays(self) -> dict[str, np.ndarray]:
        """Raw segmentation scores, the recorded inputs and every named layer replayed on them."""
        import torch

        arrays: dict[str, np.ndarray] = {}
        if self.raw_scores:
            arrays["segmentation_scores"] = np.concatenate(self.raw_scores, axis=0)
        if "segmentation" in self.inputs:
            inputs = self.inputs["segmentation"]
            arrays["inputs/segmentation"] = inputs.float().numpy()
            for name, value in segmentation_layers(self.seg_model, inputs).items():
                arrays[f"layers/segmentation/{name}"] = value
            for name, value in segmentation_float64(self.seg_model, inputs[:, 0].numpy(), layers=True).items():
                arrays[f"float64/segmentation/{name}"] = value
        if "embedding" in self.inputs:
            # the (chunk, speaker) items of the first batch with the most speech: an all-zero
            # mask would make pooling and everything after it trivially equal
            weights = self.inputs["embedding_weights"]
            keep = torch.argsort(weights.sum(dim=-1), descending=True, stable=True)[: self.layer_items]
            inputs, weights = self.inputs["embedding"][keep], weights[keep]
            arrays["inputs/embedding"] = inputs.float().numpy()
            arrays["inputs/embedding_weights"] = weights.float().numpy()
            for name, value in embedding_layers(self.emb_model, inputs, weights).items():
                arrays[f"layers/embedding/{name}"] = value
        return arrays


def run_reference(
    pipeline,
    waveform: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    uri: str = "audio",
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    record_layers: bool = True,
    layer_items: int = 1,
) -> ReferenceRun:
    """Diarize a mono float32 waveform with pyannote and record every stage.

    Layer activations are kept for the first `layer_items` chunks of the first
    segmentation batch and the first (chunk, speaker) items of the first embedding batch,
    together with the exact inputs that produced them.
    """
    import torch

    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"{uri}: the reference runner expects {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
    waveform = np.ascontiguousarray(waveform, dtype=np.float32).reshape(1, -1)
    stages = StageRecorder()
    taps = ModelTaps(pipeline, layer_items if record_layers else 0)
    with taps, record_clustering(pipeline) as clustering, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        output = pipeline(
            {"waveform": torch.from_numpy(waveform), "sample_rate": sample_rate, "uri": uri},
            num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers, hook=stages,
        )
        end = time.perf_counter()

    arrays = {**stages.arrays, **clustering.arrays, **taps.arrays()}
    if output.speaker_embeddings is not None:
        arrays["speaker_embeddings"] = np.asarray(output.speaker_embeddings)
    timings = StageTimings.from_marks(stages.marks, start, end, clustering.seconds)
    source = getattr(pipeline, "_mlx_diar_source", None)
    meta = {
        "uri": uri,
        "sample_rate": sample_rate,
        "duration": waveform.shape[1] / sample_rate,
        "timings": dataclasses.asdict(timings),
        "parameters": pipeline_parameters(pipeline),
        "source": str(source.root) if isinstance(source, PipelineSource) else None,
        "versions": package_versions(),
        "torch_threads": torch.get_num_threads(),
        "layer_items": taps.layer_items,
    }
    run = ReferenceRun(arrays=arrays, meta=meta, diarization=output.speaker_diarization,
                       exclusive_diarization=output.exclusive_speaker_diarization)
    meta["rttm"] = run.rttm()
    meta["exclusive_rttm"] = run.rttm(exclusive=True)
    meta["labels"] = list(output.speaker_diarization.labels())
    return run


META_KEY = "__meta__"
# What a bundle holds and how (the arrays and meta keys above, the annotations below); recorded in
# every bundle, checked by `load_run`, and part of the key of `harness.refcache`'s entries.
BUNDLE_FORMAT = 2
ANNOTATIONS = ("diarization", "exclusive_diarization")


def _json_track(track: Any) -> int | str:
    """A pyannote track name as JSON keeps it (pyannote names tracks by int or str)."""
    if isinstance(track, (bool, np.bool_)) or not isinstance(track, (int, np.integer, str)):
        raise TypeError(f"track {track!r}: only int or str track names can be saved")
    return track if isinstance(track, str) else int(track)


def _annotation_arrays(annotation) -> tuple[np.ndarray, dict[str, Any]]:
    """An Annotation as (segments (n, 2) float64, {uri, tracks, labels}): exact, unlike RTTM's 3 decimals."""
    turns = list(annotation.itertracks(yield_label=True))
    segments = np.array([[s.start, s.end] for s, _, _ in turns], dtype=np.float64).reshape(-1, 2)
    return segments, {"uri": annotation.uri, "tracks": [_json_track(t) for _, t, _ in turns],
                      "labels": [str(label) for _, _, label in turns]}


def _annotation(segments: np.ndarray, meta: dict[str, Any]):
    from pyannote.core import Annotation, Segment

    annotation = Annotation(uri=meta["uri"])
    if len(segments) != len(meta["tracks"]) or len(segments) != len(meta["labels"]):
        raise ValueError("annotation arrays and labels differ in length")
    for (start, end), track, label in zip(segments.tolist(), meta["tracks"], meta["labels"]):
        annotation[Segment(start, end), track] = label
    return annotation


def save_bundle(run: ReferenceRun, path: str | Path) -> Path:
    """Write arrays, both diarizations (exact segment times) and metadata into one .npz file, atomically
    (no pickle; metadata as JSON bytes)."""
    path = Path(path)
    payload = {name: np.ascontiguousarray(value) for name, value in run.arrays.items()}
    meta = {**run.meta, "bundle_format": BUNDLE_FORMAT, "annotations": {}}
    for name in ANNOTATIONS:
        payload[f"annotations/{name}"], meta["annotations"][name] = _annotation_arrays(getattr(run, name))
    payload[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **payload)
    return path


def load_bundle(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a bundle written by `save_bundle`: (arrays, metadata)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files if name != META_KEY}
        meta = json.loads(data[META_KEY].tobytes().decode())
    return arrays, meta


def load_run(path: str | Path) -> ReferenceRun:
    """The `ReferenceRun` that `save_bundle` wrote, diarizations included, as it was in memory.

    Raises ValueError (or what NumPy raises on a damaged file: OSError, EOFError, zipfile.BadZipFile,
    KeyError) for a bundle of another format or a damaged one."""
    arrays, meta = load_bundle(path)
    if meta.pop("bundle_format", None) != BUNDLE_FORMAT:
        raise ValueError(f"{path}: not a bundle of format {BUNDLE_FORMAT}")
    annotations = meta.pop("annotations")
    found = {name: _annotation(arrays.pop(f"annotations/{name}"), annotations[name]) for name in ANNOTATIONS}
    return ReferenceRun(arrays=arrays, meta=meta, **found)
