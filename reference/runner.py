"""Run the original pyannote.audio SpeakerDiarization and record every stage into one bundle.

Mirrors what a user gets from `Pipeline.from_pretrained(...)(file)`, with the pipeline
parameters of the checkpoint's config.yaml. pyannote is given only a checked, staged copy
of the pipeline directory (`mlx_diar.trust.stage_pipeline`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mlx_diar.sources import PipelineSource, resolve_pipeline
from mlx_diar.trust import stage_pipeline
from reference.layers import embedding_layers, segmentation_layers

SAMPLE_RATE = 16000


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
    copied into a private temporary directory and vetted there (`mlx_diar.trust`); pyannote
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
    arrays: dict[str, np.ndarray] = {}
    marks: dict[str, float] = {}

    def hook(step: str, artefact, file=None, total=None, completed=None):
        if artefact is None or completed is not None:
            return
        marks[step] = time.perf_counter()
        if step in ("segmentation", "speaker_counting", "discrete_diarization"):
            arrays[step] = np.asarray(artefact.data)
            arrays[f"{step}.window"] = np.array(list(_window(artefact).values()))
        elif step == "embeddings":
            arrays["embeddings"] = np.asarray(artefact)

    clustering = pipeline.clustering
    original_class = type(clustering)

    class RecordingClustering(original_class):  # records the clustering stage of this call only
        def __call__(self, *args, **kwargs):
            t0 = time.perf_counter()
            hard, soft, centroids = super().__call__(*args, **kwargs)
            marks["clustering_time"] = time.perf_counter() - t0
            arrays["hard_clusters"] = np.array(hard)
            if centroids is not None:
                arrays["centroids"] = np.asarray(centroids)
            return hard, soft, centroids

    seg_model = pipeline._segmentation.model
    emb_model = pipeline._embedding.model_
    raw_scores: list[np.ndarray] = []
    first_inputs: dict[str, torch.Tensor] = {}

    def keep_segmentation_input(module, inputs):
        first_inputs.setdefault("segmentation", inputs[0][:layer_items].detach().clone())

    def keep_embedding_input(module, args, kwargs):
        if "embedding" not in first_inputs and kwargs.get("weights") is not None:
            first_inputs["embedding"] = args[0].detach().clone()
            first_inputs["embedding_weights"] = kwargs["weights"].detach().clone()

    # Only cheap hooks during the timed run: the raw segmentation scores, and the inputs of
    # the first batches; layer activations are replayed on those inputs afterwards.
    handles = [seg_model.register_forward_hook(lambda m, i, out: raw_scores.append(out.detach().float().numpy()))]
    if record_layers:
        # pyannote probes the embedding model with random inputs to find its minimum input
        # length (cached); do it now so that the first recorded batch is a real one.
        _ = pipeline._embedding.min_num_samples
        handles.append(seg_model.register_forward_pre_hook(keep_segmentation_input))
        handles.append(emb_model.register_forward_pre_hook(keep_embedding_input, with_kwargs=True))

    clustering.__class__ = RecordingClustering
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            output = pipeline(
                {"waveform": torch.from_numpy(waveform), "sample_rate": sample_rate, "uri": uri},
                num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers, hook=hook,
            )
    finally:
        clustering.__class__ = original_class
        for handle in handles:
            handle.remove()
    end = time.perf_counter()

    if raw_scores:
        arrays["segmentation_scores"] = np.concatenate(raw_scores, axis=0)
    if "segmentation" in first_inputs:
        inputs = first_inputs["segmentation"]
        arrays["inputs/segmentation"] = inputs.float().numpy()
        for name, value in segmentation_layers(seg_model, inputs).items():
            arrays[f"layers/segmentation/{name}"] = value
    if "embedding" in first_inputs:
        # the (chunk, speaker) items of the first batch with the most speech: an all-zero
        # mask would make pooling and everything after it trivially equal
        weights = first_inputs["embedding_weights"]
        keep = torch.argsort(weights.sum(dim=-1), descending=True, stable=True)[:layer_items]
        inputs, weights = first_inputs["embedding"][keep], weights[keep]
        arrays["inputs/embedding"] = inputs.float().numpy()
        arrays["inputs/embedding_weights"] = weights.float().numpy()
        for name, value in embedding_layers(emb_model, inputs, weights).items():
            arrays[f"layers/embedding/{name}"] = value
    if output.speaker_embeddings is not None:
        arrays["speaker_embeddings"] = np.asarray(output.speaker_embeddings)

    t_seg = marks.get("segmentation", end)
    t_count = marks.get("speaker_counting", t_seg)
    t_emb = marks.get("embeddings", t_count)
    timings = {
        "segmentation": t_seg - start,
        "speaker_counting": t_count - t_seg,
        "embeddings": t_emb - t_count,
        "clustering": marks.get("clustering_time", 0.0),
        "reconstruction": end - t_emb - marks.get("clustering_time", 0.0),
        "total": end - start,
    }
    source = getattr(pipeline, "_mlx_diar_source", None)
    meta = {
        "uri": uri,
        "sample_rate": sample_rate,
        "duration": waveform.shape[1] / sample_rate,
        "timings": timings,
        "parameters": pipeline_parameters(pipeline),
        "source": str(source.root) if isinstance(source, PipelineSource) else None,
        "versions": _versions(),
        "torch_threads": torch.get_num_threads(),
        "layer_items": layer_items if record_layers else 0,
    }
    run = ReferenceRun(arrays=arrays, meta=meta, diarization=output.speaker_diarization,
                       exclusive_diarization=output.exclusive_speaker_diarization)
    meta["rttm"] = run.rttm()
    meta["exclusive_rttm"] = run.rttm(exclusive=True)
    meta["labels"] = list(output.speaker_diarization.labels())
    return run


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("pyannote.audio", "torch", "numpy", "mlx"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


META_KEY = "__meta__"


def save_bundle(run: ReferenceRun, path: str | Path) -> Path:
    """Write arrays and metadata into one .npz file (no pickle; metadata as JSON bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {name: np.ascontiguousarray(value) for name, value in run.arrays.items()}
    payload[META_KEY] = np.frombuffer(json.dumps(run.meta).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **payload)
    tmp.replace(path)
    return path


def load_bundle(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a bundle written by `save_bundle`: (arrays, metadata)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files if name != META_KEY}
        meta = json.loads(data[META_KEY].tobytes().decode())
    return arrays, meta
