"""Mirrors pyannote.audio.pipelines.speaker_diarization.SpeakerDiarization, on MLX models.

Each stage of `SpeakerDiarization.apply` is a small method named after its pyannote
counterpart and can be fed external inputs (e.g. the real community-1 intermediate results):
`segmentation_scores` + `to_multilabel` (pyannote's `get_segmentations`), `binarize_segmentations`,
`speaker_count`, `get_embeddings`, `clustering`, `reconstruct`, `to_diarization`, and
`mlx_diar.runtime.signal.to_annotation`. Neural stages run in MLX; the rest in NumPy/SciPy.
No torch or pyannote.audio is imported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time
import warnings
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, Sequence

import mlx.core as mx
import numpy as np
from pyannote.core import Annotation, SlidingWindow, SlidingWindowFeature

from mlx_diar.runtime import sparse
from mlx_diar.cpu.blas import blas_thread_count, blas_threads
from mlx_diar.cpu.malloc import release_free_heap
from mlx_diar.runtime.audio import SAMPLE_RATE, Waveform, as_waveform, closing_audio
from mlx_diar.clustering import CLUSTERING, PLDA, BaseClustering, VBxClustering
from mlx_diar.errors import ModelDirError, OptionError
from mlx_diar.runtime.inference import aggregate, chunk_batches, trim
from mlx_diar.cpu.lanes import SegmentationLanes
from mlx_diar.conversion.model_io import COMPUTE as COMPUTE_MODES
from mlx_diar.conversion.model_io import MLXModels, load_model
from mlx_diar.models import kernels
from mlx_diar.models.powerset import Powerset
from mlx_diar.runtime.parameters import Parameters
from mlx_diar.runtime.signal import binarize, to_annotation
from mlx_diar.runtime.sparse import SparsePlan

# the keys of `DiarizeOutput.timings` (the reference runner times the same stages)
STAGES = ("segmentation", "speaker_counting", "embeddings", "clustering", "reconstruction", "total")
# 10 s chunks per embedding-trunk batch on the CPU's accelerated route (one batch per lane). 2-core
# x86, OpenBLAS, seconds per chunk: 1 chunk 0.89, 2 chunks 0.96, 4 chunks 1.29 (bigger batches
# only add memory traffic). The MLX route (any device) takes what `embedding_batch_size` allows,
# at most MLX_TRUNK_CHUNKS: each batch is one graph, synchronised with the host once.
TRUNK_CHUNKS = 1
MLX_TRUNK_CHUNKS = 8
# 10 s chunks per segmentation forward (per lane on the CPU: `segmentation_lanes`), by device,
# whatever `segmentation_batch_size` asks (the LSTM stack holds ~3 MB per chunk), and per SincNet
# forward within it: with MLX's convolution SincNet's first layer makes 80 channels at the sample
# rate, 51 MB per chunk (a batch of 32 raised the CPU peak by 888 MB, 8 chunks: 291 MB). The LSTM's
# step is cheaper per chunk in larger batches (2-core x86, one core: 12.8 us per chunk and step at
# 8 chunks, 8.9 at 32, 8.3 at 64).
SEGMENTATION_CHUNKS = {"cpu": 32, "gpu": 32}
SINCNET_CHUNKS = {"cpu": 8, "gpu": 32}
# On the CPU the exact embedding stage runs this many trunk batches at once, each on its own MLX
# stream (a thread) with single-threaded BLAS: most of the trunk's time outside the GEMMs (pads,
# shifts, normalisation, ReLU) runs on one thread per stream, so one stream with 2-thread BLAS
# kept a 2-core x86 CPU half idle: 0.77-1.04 s per chunk, two lanes 0.52-0.70 s (same outputs).
# At most MAX_LANES (unmeasured above 2 cores), never more than the cores this process may use.
MAX_LANES = 4
KERNELS = kernels.ROUTES
COMPUTE = ("auto", *COMPUTE_MODES)
# "sparse" (fast, not exact): the trunk on every other active chunk, the rest from their
# neighbours (`mlx_diar.runtime.sparse`); "shared" (faster, less exact): trunk once per block of chunks
EMBEDDING_MODES = ("exact", "sparse", "shared")


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def _cpu_streams(count: int) -> tuple[mx.Stream, ...]:
    return tuple(mx.new_stream(mx.cpu) for _ in range(count))


def cpu_lanes() -> int:
    """How many lanes the CPU stages spread over (see MAX_LANES): one per core this process may
    use, and no more than the threads its BLAS was given (a corpus worker limited to one thread
    runs one lane)."""
    return min(MAX_LANES, available_cores(), blas_thread_count() or MAX_LANES)


def lane_streams(device: mx.Device) -> tuple[mx.Stream, ...]:
    """The streams the exact embedding stage spreads its trunk batches over: on the CPU's
    accelerated route one per lane (`cpu_lanes`); the device's default stream elsewhere."""
    lanes = cpu_lanes()
    if device == mx.cpu and kernels.current_route() == "auto" and lanes > 1:
        return _cpu_streams(lanes)
    return (mx.default_stream(device),)


@dataclasses.dataclass(frozen=True)
class PipelineParameters(Parameters):
    """Constructor parameters of `SpeakerDiarization`; defaults are community-1's config.yaml."""

    clustering: str = "VBxClustering"
    segmentation_step: float = 0.1
    embedding_exclude_overlap: bool = True
    segmentation_batch_size: int = 32
    embedding_batch_size: int = 32
    embedding_mode: str = "exact"  # or (opt-in, fast, not exact) "sparse" or "shared": see EMBEDDING_MODES

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require("clustering", self.clustering in CLUSTERING, f"expected one of {', '.join(CLUSTERING)}")
        self.require("embedding_mode", self.embedding_mode in EMBEDDING_MODES,
                     f"expected one of {', '.join(EMBEDDING_MODES)}")
        self.require("segmentation_step", 0 < self.segmentation_step <= 1, "expected a number in (0, 1]")
        for name in ("segmentation_batch_size", "embedding_batch_size"):
            self.require(name, getattr(self, name) >= 1, "expected an integer >= 1")


@dataclasses.dataclass(frozen=True)
class SegmentationParameters(Parameters):
    """`SpeakerDiarization.segmentation` hyper-parameters of a powerset model (community-1's default)."""

    group = "segmentation"

    min_duration_off: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require("min_duration_off", self.min_duration_off >= 0, "expected a number >= 0")


@dataclasses.dataclass(frozen=True)
class MultilabelSegmentationParameters(SegmentationParameters):
    """A multilabel model's segmentation hyper-parameters: also the binarisation `threshold`."""

    threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require("threshold", 0 <= self.threshold <= 1, "expected a number in [0, 1]")


def silence_clusters(hard_clusters: np.ndarray, binarized: SlidingWindowFeature) -> np.ndarray:
    """A copy of `hard_clusters` (chunks, speakers) with pyannote's -2 where the speaker is silent
    in the chunk's binarized segmentation."""
    hard_clusters = np.array(hard_clusters, copy=True)
    hard_clusters[np.sum(binarized.data, axis=1) == 0] = -2
    return hard_clusters


@dataclasses.dataclass
class DiarizeOutput:
    """Mirrors pyannote's DiarizeOutput: annotations and one embedding per speaker (label order)."""

    speaker_diarization: Annotation
    exclusive_speaker_diarization: Annotation
    speaker_embeddings: np.ndarray | None = None
    stages: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    def serialize(self) -> dict[str, Any]:
        """Same shape as pyannote's DiarizeOutput.serialize()."""
        def turns(annotation: Annotation) -> list[dict[str, Any]]:
            return [{"start": round(s.start, 3), "end": round(s.end, 3), "speaker": label}
                    for s, _, label in annotation.itertracks(yield_label=True)]

        return {"diarization": turns(self.speaker_diarization),
                "exclusive_diarization": turns(self.exclusive_speaker_diarization)}


MAX_SPEAKERS = 1000  # a larger count is a typo: each speaker needs its own cluster of 10 s chunks


def set_num_speakers(num_speakers: int | None = None, min_speakers: int | None = None,
                     max_speakers: int | None = None) -> tuple[int | None, int, int | float]:
    """Validate speaker-count constraints (`pipelines.utils.diarization.set_num_speakers`).

    Unlike pyannote, where 0 silently means "not given", each count given must be an integer
    in [1, MAX_SPEAKERS], min_speakers <= max_speakers, and num_speakers within them; OptionError otherwise.
    """
    given = {"num_speakers": num_speakers, "min_speakers": min_speakers, "max_speakers": max_speakers}
    for name, value in given.items():
        if value is None:
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise OptionError(f"{name} must be an integer, got {value!r}")
        if not 1 <= value <= MAX_SPEAKERS:
            hint = " (leave it unset for an automatic count)" if value == 0 else ""
            raise OptionError(f"{name} = {value} must be between 1 and {MAX_SPEAKERS}{hint}")
    if num_speakers is not None and not (min_speakers or 1) <= num_speakers <= (max_speakers or MAX_SPEAKERS):
        raise OptionError(f"num_speakers = {num_speakers} contradicts min_speakers = {min_speakers} / "
                          f"max_speakers = {max_speakers}")
    min_speakers = num_speakers or min_speakers or 1
    max_speakers = num_speakers or max_speakers or np.inf
    if min_speakers > max_speakers:
        raise OptionError(f"min_speakers must be smaller than (or equal to) max_speakers "
                          f"(here: min_speakers={min_speakers:g} and max_speakers={max_speakers:g}).")
    if min_speakers == max_speakers:
        num_speakers = min_speakers
    return num_speakers, min_speakers, max_speakers


class SpeakerDiarizationPipeline:
    """Speaker diarization in MLX, identical in its stages to pyannote's SpeakerDiarization.

    >>> pipeline = SpeakerDiarizationPipeline(model_path="models/mlx_model", device="cpu")
    >>> pipeline = SpeakerDiarizationPipeline.from_pretrained("pyannote/speaker-diarization-community-1")
    >>> out = pipeline("audio.wav", num_speakers=None)
    >>> for turn, speaker in out.speaker_diarization: ...
    """

    @classmethod
    def from_pretrained(cls, source: str | Path, *, dtype: str | None = None, quantize: int | None = None,
                        q_group_size: int | None = None, precision: str | None = None, revision: str | None = None,
                        token: str | None = None, cache_dir: str | Path | None = None,
                        **kwargs: Any) -> "SpeakerDiarizationPipeline":
        """The pipeline of `source`: a converted model directory or Hugging Face id, or a pyannote pipeline
        (directory or id) converted on first use and cached (`mlx_diar.conversion.hub.resolve_model`).
        `kwargs` (device, params, hyper_parameters, kernels, compute) go to the constructor."""
        from mlx_diar.conversion.hub import resolve_model

        return cls(model_path=resolve_model(source, dtype=dtype, quantize=quantize, q_group_size=q_group_size,
                                            precision=precision, revision=revision, token=token,
                                            cache_dir=cache_dir), **kwargs)

    def __init__(self, model_path: str | Path | None = None, device: str = "cpu",
                 models: MLXModels | None = None, params: Mapping[str, Any] | None = None,
                 hyper_parameters: Mapping[str, Any] | None = None, kernels: str = "auto",
                 compute: str = "auto") -> None:
        """`kernels`: "auto" (the CPU accelerations where they apply) or "mlx" (the MLX layers only,
        as on a GPU; `mlx_diar.models.kernels`). `compute`: how a reduced or quantized `model_path`
        computes (`mlx_diar.conversion.model_io.COMPUTE`): "native" as stored, "float32" with its
        weights expanded at load, "auto" float32 on the CPU (no fast reduced kernels there) and
        native elsewhere. Given `models`, they compute as they were loaded."""
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
        if kernels not in KERNELS:
            raise OptionError(f"kernels = {kernels!r} must be one of {', '.join(KERNELS)}")
        if compute not in COMPUTE:
            raise OptionError(f"compute = {compute!r} must be one of {', '.join(COMPUTE)}")
        self.device = mx.gpu if device == "gpu" else mx.cpu
        if device == "gpu" and not mx.is_available(mx.gpu):
            raise RuntimeError("device='gpu' requested but MLX has no GPU backend here; use device='cpu'")
        self.kernels = kernels
        if models is None:
            if model_path is None:
                raise ValueError("give model_path (a converted 'full' model directory) or models")
            if compute == "auto":
                compute = "float32" if self.device == mx.cpu else "native"
            models = load_model(model_path, compute=compute)
        if models.segmentation is None or models.embedding is None or models.plda is None:
            raise ValueError(f"{models.path}: a 'full' model (segmentation, embedding and PLDA) is needed")
        self.models = models
        saved = models.config.get("pipeline", {})
        try:
            saved_options = PipelineParameters().update(saved.get("params", {}))
        except OptionError as e:
            raise ModelDirError(f"{models.path / 'config.json'}: pipeline {e}") from None
        self.options = saved_options.update(params or {})
        segmentation = SegmentationParameters if self.segmentation_config.powerset else MultilabelSegmentationParameters
        self.segmentation_parameters: SegmentationParameters = segmentation()
        self.clustering_parameters: Parameters = CLUSTERING[self.options.clustering][1]()
        saved_hyper = dict(saved.get("hyper_parameters", {}))
        if self.options.clustering != saved_options.clustering:
            saved_hyper.pop("clustering", None)  # saved for another method: start from this one's defaults
        try:
            self.instantiate(saved_hyper)
        except OptionError as e:
            raise ModelDirError(f"{models.path / 'config.json'}: pipeline {e}") from None
        if hyper_parameters:
            self.instantiate(hyper_parameters)
        self._plda = PLDA(**{k: models.plda[k] for k in ("mean1", "mean2", "lda", "mu", "tr", "psi")})

    # ------------------------------------------------------------------ parameters
    @property
    def segmentation_config(self):
        return self.models.segmentation.config

    @property
    def params(self) -> Mapping[str, Any]:
        """Constructor parameters in use (read-only; set them when constructing the pipeline)."""
        return MappingProxyType(self.options.as_dict())

    @property
    def hyper_parameters(self) -> dict[str, dict[str, Any]]:
        """A copy of the hyper-parameters in use, per group (change them with `instantiate`)."""
        return {"segmentation": self.segmentation_parameters.as_dict(),
                "clustering": self.clustering_parameters.as_dict()}

    def instantiate(self, hyper_parameters: Mapping[str, Any]) -> "SpeakerDiarizationPipeline":
        """Override hyper-parameters, e.g. {"clustering": {"threshold": 0.5}} (like pyannote's instantiate).

        Only the chosen clustering method's parameters exist (VBx: threshold, Fa, Fb;
        agglomerative: threshold, method, min_cluster_size). An unknown name, a value of the
        wrong type or out of range raises `OptionError` naming it; nothing changes then.
        """
        groups: dict[str, Parameters] = {"segmentation": self.segmentation_parameters,
                                         "clustering": self.clustering_parameters}
        updated = {}
        for group, values in hyper_parameters.items():
            if group not in groups:
                raise OptionError(f"unknown pipeline parameter group {group!r}; known: {', '.join(groups)}")
            if not isinstance(values, Mapping):
                raise OptionError(f"{group} = {values!r}: expected a mapping of parameter names to values")
            updated[group] = groups[group].update(values)
        self.segmentation_parameters = updated.get("segmentation", self.segmentation_parameters)
        self.clustering_parameters = updated.get("clustering", self.clustering_parameters)
        return self

    def parameters(self) -> dict[str, Any]:
        """The values in use: constructor parameters and instantiated hyper-parameters."""
        return {**self.options.as_dict(), "params": self.hyper_parameters}

    # ------------------------------------------------------------------ stages
    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The models' device as default stream, and this pipeline's kernel route."""
        with mx.stream(self.device), kernels.route(self.kernels):
            yield

    def segmentation_scores(self, waveform: Waveform) -> SlidingWindowFeature:
        """Raw model outputs per 10 s chunk (`Inference.slide` with skip_aggregation, before conversion).

        (num_chunks, num_frames, num_classes) log-probabilities (powerset) or probabilities.
        """
        config = self.segmentation_config
        duration = config.duration
        step = self.params["segmentation_step"] * duration
        batch_size = min(int(self.params["segmentation_batch_size"]), SEGMENTATION_CHUNKS[self.device.name])
        model = self.models.segmentation
        lanes = self.segmentation_lanes
        sincnet_batch = SINCNET_CHUNKS[self.device.name]
        outputs = []
        with self.running():
            for batch in chunk_batches(waveform, round(duration * SAMPLE_RATE), round(step * SAMPLE_RATE),
                                       batch_size * (lanes.lanes if lanes else 1)):
                if lanes is not None:
                    outputs.append(lanes(batch, sincnet_batch))
                    continue
                features = model.features(mx.array(batch), sincnet_batch=sincnet_batch)
                outputs.append(np.array(model.head(features).astype(mx.float32)))
        data = np.concatenate(outputs, axis=0)
        return SlidingWindowFeature(data, SlidingWindow(start=0.0, duration=duration, step=step))

    @functools.cached_property
    def segmentation_lanes(self) -> SegmentationLanes | None:
        """Where the segmentation model runs its float32 NumPy forward (on the CPU, float32, not
        quantized: `PyanNet.numpy_forward`), the lanes that run it: this process and a helper
        process per further lane (`cpu_lanes`), started at the first use; None elsewhere."""
        if self.device != mx.cpu:
            return None
        with self.running():
            forward = self.models.segmentation.numpy_forward()
        return None if forward is None else SegmentationLanes(forward, cpu_lanes())

    def to_multilabel(self, scores: SlidingWindowFeature) -> SlidingWindowFeature:
        """Powerset log-probabilities -> hard multilabel, as pyannote's Inference converts them."""
        config = self.segmentation_config
        if not config.powerset:
            return scores
        powerset = Powerset(config.num_speakers, config.powerset_max_classes)
        return SlidingWindowFeature(powerset.to_multilabel(scores.data), scores.sliding_window)

    def binarize_segmentations(self, segmentations: SlidingWindowFeature) -> SlidingWindowFeature:
        """Powerset outputs are already binary; multilabel scores go through hysteresis `binarize`."""
        if self.segmentation_config.powerset:
            return segmentations
        onset = self.segmentation_parameters.threshold
        return SlidingWindowFeature(binarize(segmentations.data, onset=onset, initial_state=False),
                                    segmentations.sliding_window)

    @property
    def frames(self) -> SlidingWindow:
        """Output frame resolution of the segmentation model (pyannote's model.receptive_field)."""
        return self.models.segmentation.receptive_field

    def speaker_count(self, binarized: SlidingWindowFeature, warm_up: tuple[float, float] = (0.0, 0.0)
                      ) -> SlidingWindowFeature:
        """Frame-level number of active speakers (`SpeakerDiarizationMixin.speaker_count`)."""
        trimmed = trim(binarized, warm_up=warm_up)
        summed = SlidingWindowFeature(np.sum(trimmed.data, axis=-1, keepdims=True), trimmed.sliding_window)
        count = aggregate(summed, self.frames, hamming=False, missing=0.0, skip_average=False)
        count.data = np.rint(count.data).astype(np.uint8)
        return count

    def embedding_masks(self, binarized: SlidingWindowFeature, exclude_overlap: bool) -> np.ndarray:
        """(num_chunks, num_speakers, num_frames) float32 pooling weights, as `get_embeddings` builds them.

        With `exclude_overlap`, frames where several speakers are active are dropped, unless
        too little clean speech remains (then the whole mask is used).
        """
        duration = binarized.sliding_window.duration
        num_chunks, num_frames, num_speakers = binarized.data.shape
        masks = np.nan_to_num(binarized.data, nan=0.0).astype(np.float32)
        if not exclude_overlap:
            return np.ascontiguousarray(masks.transpose(0, 2, 1))
        min_num_samples = self.models.embedding.min_num_samples
        num_samples = duration * SAMPLE_RATE
        min_num_frames = math.ceil(num_frames * min_num_samples / num_samples)
        clean_frames = 1.0 * (np.sum(binarized.data, axis=2, keepdims=True) < 2)
        clean = np.nan_to_num(binarized.data * clean_frames, nan=0.0).astype(np.float32)
        use_clean = np.sum(clean, axis=1) > min_num_frames  # (chunks, speakers)
        used = np.where(use_clean[:, None, :], clean, masks)
        return np.ascontiguousarray(used.transpose(0, 2, 1))

    def chunk_waveforms(self, waveform: Waveform, chunks: SlidingWindow, indices: Sequence[int]) -> np.ndarray:
        """(len(indices), samples) audio of those chunks, zero-padded past the end (`Audio.crop(mode="pad")`).

        Called one batch at a time, so the overlapping chunks never all exist as copies.
        """
        window = round(chunks.duration * SAMPLE_RATE)
        out = np.zeros((len(indices), window), dtype=np.float32)
        num_samples = waveform.shape[0]
        for row, c in enumerate(indices):
            segment = chunks[c]
            start = round(segment.start * SAMPLE_RATE)
            end = round(segment.end * SAMPLE_RATE)
            piece = waveform[max(start, 0):min(end, num_samples)]
            offset = max(0, -start)
            out[row, offset:offset + piece.shape[0]] = piece
        return out

    def silent_embedding(self, num_speakers: int) -> np.ndarray:
        """(num_speakers, dim) embedding of all-zero pooling weights: the model's output for a speaker
        who is silent in a chunk (zero statistics through the embedding layers, whatever the audio)."""
        model = self.models.embedding
        with self.running():
            frames = model.forward_frames(mx.zeros((1, model.min_num_samples)))  # any finite frames
            return np.array(model.forward_embedding(frames, mx.zeros((1, num_speakers, 1))))[0]

    def sparse_plan(self, binarized: SlidingWindowFeature) -> SparsePlan:
        """The chunks sparse mode computes, and where the others' embeddings come from."""
        return sparse.plan_sparse(binarized.data, binarized.sliding_window.step / self.frames.step,
                                  min_frames=int(np.ceil(sparse.MIN_SPEECH / self.frames.step)))

    def get_embeddings(self, waveform: Waveform, binarized: SlidingWindowFeature,
                       exclude_overlap: bool | None = None,
                       progress: Callable[[int, int], None] | None = None,
                       plan: SparsePlan | None = None) -> np.ndarray:
        """(num_chunks, num_speakers, dim) embeddings per (chunk, local speaker).

        Same inputs as pyannote's `get_embeddings` (chunk audio, per-speaker masks), but the
        ResNet trunk runs once per chunk and statistics pooling once per speaker: pyannote
        runs the whole network for each (chunk, speaker) pair on identical audio. Chunks where
        no speaker is active skip the trunk: all their masks are zero, so their embeddings are
        `silent_embedding`, which is what pyannote computes for them. The ``embedding_mode``
        parameter "sparse" (opt-in, not exact) computes only `plan`'s chunks (`sparse_plan`
        when not given) and fills the others from them; "shared" (opt-in, not exact) runs the
        trunk once over long blocks of the recording instead (`shared_embeddings`).
        """
        if exclude_overlap is None:
            exclude_overlap = bool(self.params["embedding_exclude_overlap"])
        mode = self.options.embedding_mode
        num_chunks = binarized.data.shape[0]
        masks = self.embedding_masks(binarized, exclude_overlap)
        embeddings = np.empty((num_chunks, masks.shape[1], self.models.embedding.config.embed_dim), np.float32)
        embeddings[:] = self.silent_embedding(masks.shape[1])
        active = np.flatnonzero(masks.any(axis=(1, 2)))
        if mode == "shared":
            self.shared_embeddings(waveform, binarized.sliding_window, masks, active, embeddings, progress)
        elif mode == "sparse":
            plan = plan if plan is not None else self.sparse_plan(binarized)
            computed = active[plan.computed[active]]
            self.trunk_embeddings(waveform, binarized.sliding_window, masks, computed, embeddings, progress)
            plan.fill(embeddings)
        else:
            self.trunk_embeddings(waveform, binarized.sliding_window, masks, active, embeddings, progress)
        return embeddings

    def compute_chunks(self, waveform: Waveform, binarized: SlidingWindowFeature, indices: np.ndarray,
                       embeddings: np.ndarray) -> float:
        """Exact embeddings of the chunks `indices` into `embeddings` (sparse mode's later passes);
        returns the seconds spent."""
        if not len(indices):
            return 0.0
        start = time.perf_counter()
        masks = self.embedding_masks(binarized, bool(self.params["embedding_exclude_overlap"]))
        self.trunk_embeddings(waveform, binarized.sliding_window, masks, indices, embeddings)
        return time.perf_counter() - start

    def sparse_clustering(self, waveform: Waveform, binarized: SlidingWindowFeature,
                          segmentations: SlidingWindowFeature, count: SlidingWindowFeature, plan: SparsePlan,
                          embeddings: np.ndarray, cluster: Callable[..., dict[str, Any]],
                          ) -> tuple[dict[str, Any], dict[str, Any], float]:
        """Sparse mode's clustering (`mlx_diar.runtime.sparse`): trained on the computed chunks, then the
        uncertain filled chunks computed and assigned again, then the check that either half of
        the training chunks gives the same diarization, else every chunk computed and clustered
        as exact mode does. `cluster(embeddings, train_chunks=...)` runs the clustering.

        Returns the trace, ``stages["sparse"]`` and the seconds spent computing embeddings."""
        trace = cluster(embeddings, train_chunks=plan.computed)
        uncertain = sparse.uncertain_chunks(plan, trace["soft_clusters"])
        seconds = self.compute_chunks(waveform, binarized, uncertain, embeddings)
        if len(uncertain):
            trace = cluster(embeddings, train_chunks=plan.computed)  # the same training: same centroids

        def discrete(hard_clusters: np.ndarray) -> np.ndarray:
            return self.reconstruct(segmentations, silence_clusters(hard_clusters, binarized), count).data

        filled = np.flatnonzero((plan.sources >= 0).any(axis=(1, 2)))
        spread = 0.0
        if len(filled):
            whole = discrete(trace["hard_clusters"])
            with warnings.catch_warnings():  # a half without training pairs: NumPy's empty-mean warning
                warnings.simplefilter("ignore", RuntimeWarning)
                halves = [cluster(embeddings, train_chunks=half)["hard_clusters"]
                          for half in sparse.training_halves(plan)]
            spread = max(sparse.disagreement(whole, discrete(hard)) for hard in halves)
        completed = np.zeros(0, dtype=np.int64)
        if spread > sparse.AGREEMENT:
            completed = np.setdiff1d(filled, uncertain)
            seconds += self.compute_chunks(waveform, binarized, completed, embeddings)
            trace = cluster(embeddings, train_chunks=None)
        return trace, {"computed": plan.computed, "refined": uncertain, "disagreement": spread,
                       "completed": completed}, seconds

    def trunk_embeddings(self, waveform: Waveform, chunks: SlidingWindow, masks: np.ndarray,
                         indices: np.ndarray, out: np.ndarray,
                         progress: Callable[[int, int], None] | None = None) -> None:
        """Exact embeddings of the chunks `indices` into ``out[indices]``: the trunk once per chunk,
        batches spread over the device's lanes (`lane_streams`)."""
        model = self.models.embedding
        # pyannote batches (chunk, speaker) pairs; here a batch holds that many pairs' chunks, at
        # most TRUNK_CHUNKS per lane on the CPU's accelerated route, MLX_TRUNK_CHUNKS elsewhere:
        # the trunk's transient memory grows with the chunks in a batch
        pairs = int(self.params["embedding_batch_size"]) // max(1, masks.shape[1])
        with self.running():
            limit = TRUNK_CHUNKS if kernels.accelerated() else MLX_TRUNK_CHUNKS
            chunks_per_batch = max(1, min(pairs, limit))
            # no more lanes than batches: a one-chunk file keeps its BLAS on every core
            lanes = lane_streams(self.device)[: max(1, math.ceil(len(indices) / chunks_per_batch))]
            with blas_threads(1 if len(lanes) > 1 else None):
                for start in range(0, len(indices), chunks_per_batch * len(lanes)):
                    stop = min(start + chunks_per_batch * len(lanes), len(indices))
                    batches = [indices[k:k + chunks_per_batch] for k in range(start, stop, chunks_per_batch)]
                    outputs = []
                    for lane, batch in zip(lanes, batches):
                        audio = self.chunk_waveforms(waveform, chunks, batch)
                        with mx.stream(lane):
                            frames = model.forward_frames(mx.array(audio))
                            outputs.append(model.forward_embedding(frames, mx.array(masks[batch])))
                    mx.eval(outputs)
                    for batch, output in zip(batches, outputs):
                        out[batch] = np.array(output)
                    if progress is not None:
                        progress(stop, len(indices))

    def shared_embeddings(self, waveform: Waveform, chunks: SlidingWindow, masks: np.ndarray,
                          active: np.ndarray, out: np.ndarray,
                          progress: Callable[[int, int], None] | None = None,
                          block_chunks: int = 24, margin: float = 2.0) -> None:
        """Fast, approximate embeddings: fbank and trunk once per block of ``block_chunks`` chunks.

        Each block's audio (plus ``margin`` seconds of context where the recording has it) goes
        through fbank, with a running mean over one chunk duration in place of the per-chunk mean,
        and through the trunk once; each (chunk, speaker) is then pooled from the chunk's trunk
        frames (nearest frame to the chunk start). Fills ``out[active]``. Not exact: chunk edges
        see real context instead of zero padding, and the mean normalisation is a running one.
        """
        model = self.models.embedding
        window, step = round(chunks.duration * SAMPLE_RATE), round(chunks.step * SAMPLE_RATE)
        hop = round(model.config.frame_shift * model.config.sample_rate / 1000)
        chunk_frames = model.num_frames(window)
        context = round(margin * SAMPLE_RATE) // hop * hop
        num_samples = waveform.shape[0]
        done = 0
        with self.running():
            for first in range(0, int(active[-1]) + 1 if len(active) else 0, block_chunks):
                batch = active[(active >= first) & (active < first + block_chunks)]
                if not len(batch):
                    continue
                start = max(0, int(batch[0]) * step - context)
                stop = int(batch[-1]) * step + window
                stop = max(stop, min(stop + context, num_samples))
                audio = np.zeros(stop - start, np.float32)
                piece = waveform[start:min(stop, num_samples)]
                audio[: piece.shape[0]] = piece
                frames = model.forward_frames(mx.array(audio[None]), centering_span=chunks.duration)[0]
                offsets = np.rint((batch * step - start) / hop / model.time_stride).astype(np.int32)
                index = np.minimum(offsets[:, None] + np.arange(chunk_frames), frames.shape[1] - 1)
                selected = frames[:, mx.array(index)].transpose(1, 0, 2, 3)  # (chunks, freq', time', ch)
                out[batch] = np.array(model.forward_embedding(selected, mx.array(masks[batch])))
                done += len(batch)
                if progress is not None:
                    progress(done, len(active))

    def clustering(self) -> BaseClustering:
        """The clustering stage configured by the pipeline parameters (as pyannote builds it)."""
        if self.options.clustering == "VBxClustering":
            return VBxClustering(self._plda, self.clustering_parameters)
        return CLUSTERING[self.options.clustering][0](self.clustering_parameters)

    @staticmethod
    def reconstruct(segmentations: SlidingWindowFeature, hard_clusters: np.ndarray,
                    count: SlidingWindowFeature) -> SlidingWindowFeature:
        """Discrete diarization from clustered segmentations and speaker count (`reconstruct`)."""
        num_chunks, num_frames, _ = segmentations.data.shape
        num_clusters = int(np.max(hard_clusters)) + 1
        clustered = np.nan * np.zeros((num_chunks, num_frames, num_clusters))
        for c, (cluster, segmentation) in enumerate(zip(hard_clusters, segmentations.data)):
            for k in np.unique(cluster):
                if k == -2:
                    continue
                clustered[c, :, k] = np.max(segmentation[:, cluster == k], axis=1)
        return SpeakerDiarizationPipeline.to_diarization(
            SlidingWindowFeature(clustered, segmentations.sliding_window), count)

    @staticmethod
    def to_diarization(segmentations: SlidingWindowFeature, count: SlidingWindowFeature) -> SlidingWindowFeature:
        """Keep the `count` most active speakers per frame (`SpeakerDiarizationMixin.to_diarization`)."""
        activations = aggregate(segmentations, count.sliding_window, hamming=False, missing=0.0, skip_average=True)
        _, num_speakers = activations.data.shape
        max_per_frame = int(np.max(count.data))
        if num_speakers < max_per_frame:
            activations.data = np.pad(activations.data, ((0, 0), (0, max_per_frame - num_speakers)))
        extent = activations.extent & count.extent
        activations = activations.crop(extent, return_data=False)
        count = count.crop(extent, return_data=False)
        order = np.argsort(-activations.data, axis=-1, kind="quicksort")
        binary = np.zeros_like(activations.data)
        c = count.data[:, 0].astype(np.int64)
        rank = np.arange(binary.shape[1])[None, :] < c[:, None]
        np.put_along_axis(binary, order, rank.astype(binary.dtype), axis=-1)
        return SlidingWindowFeature(binary, activations.sliding_window)

    # ------------------------------------------------------------------ apply
    def __call__(self, file: str | Path | Mapping[str, Any], num_speakers: int | None = None,
                 min_speakers: int | None = None, max_speakers: int | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 keep_stages: bool = False) -> DiarizeOutput:
        """Diarize a file path or {"waveform": array, "sample_rate": int[, "uri": str]}."""
        waveform, uri = as_waveform(file)
        with closing_audio(waveform):
            return self.apply(waveform, uri=uri, num_speakers=num_speakers, min_speakers=min_speakers,
                              max_speakers=max_speakers, progress=progress, keep_stages=keep_stages)

    def apply(self, waveform: Waveform, uri: str = "audio", num_speakers: int | None = None,
              min_speakers: int | None = None, max_speakers: int | None = None,
              progress: Callable[[str, int, int], None] | None = None,
              keep_stages: bool = False, scores: SlidingWindowFeature | None = None) -> DiarizeOutput:
        """`SpeakerDiarization.apply` on a mono 16 kHz float32 waveform (an array or an `AudioFile`).
        `scores`: the segmentation model's raw output to start from (an outside input, as
        `segmentation_scores` returns it) instead of running the model."""
        num_speakers, min_speakers, max_speakers = set_num_speakers(num_speakers, min_speakers, max_speakers)
        stages: dict[str, Any] = {}
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        scores = self.segmentation_scores(waveform) if scores is None else scores
        segmentations = self.to_multilabel(scores)
        binarized = self.binarize_segmentations(segmentations)
        release_free_heap()
        timings["segmentation"] = time.perf_counter() - t0
        t = time.perf_counter()
        count = self.speaker_count(binarized)
        timings["speaker_counting"] = time.perf_counter() - t
        stages.update(segmentation=segmentations, speaker_counting=count)
        if keep_stages:
            stages["segmentation_scores"] = scores
        # the raw powerset scores are not needed past this point (pyannote keeps only the multilabel
        # segmentations): 7 float32 classes per frame, 59 MB per hour of audio
        del scores
        empty = Annotation(uri=uri)
        if count.data.size == 0 or np.nanmax(count.data) == 0.0:
            timings["total"] = time.perf_counter() - t0
            return DiarizeOutput(empty, Annotation(uri=uri),
                                 np.zeros((0, self.models.embedding.config.embed_dim)),
                                 stages if keep_stages else {}, timings)
        t = time.perf_counter()
        plan = self.sparse_plan(binarized) if self.options.embedding_mode == "sparse" else None
        embeddings = self.get_embeddings(
            waveform, binarized, plan=plan,
            progress=(lambda done, total: progress("embeddings", done, total)) if progress else None)
        release_free_heap()
        timings["embeddings"] = time.perf_counter() - t
        stages["embeddings"] = embeddings
        t = time.perf_counter()
        # the count the output keeps (pyannote clips it after clustering, which does not read it;
        # sparse mode's check reconstructs with it)
        count.data = np.minimum(count.data, max_speakers).astype(np.int8)
        cluster = functools.partial(self.clustering().trace, segmentations=binarized.data,
                                    num_clusters=num_speakers, min_clusters=min_speakers,
                                    max_clusters=max_speakers)
        if plan is None:
            trace = cluster(embeddings)
        else:
            trace, stages["sparse"], seconds = self.sparse_clustering(
                waveform, binarized, segmentations, count, plan, embeddings, cluster)
            timings["embeddings"] += seconds  # embedding work, not clustering
            t += seconds
        hard_clusters, centroids = trace["hard_clusters"], trace["centroids"]
        timings["clustering"] = time.perf_counter() - t
        stages["clustering"] = trace
        t = time.perf_counter()
        num_different = int(np.max(hard_clusters)) + 1
        if num_different < min_speakers or num_different > max_speakers:
            warnings.warn(f"The detected number of speakers ({num_different}) for {uri} is outside the given "
                          f"bounds [{min_speakers}, {max_speakers}].")
        hard_clusters = silence_clusters(hard_clusters, binarized)
        stages["hard_clusters"] = hard_clusters
        min_duration_off = self.segmentation_parameters.min_duration_off
        discrete = self.reconstruct(segmentations, hard_clusters, count)
        stages["discrete_diarization"] = discrete
        diarization = to_annotation(discrete, min_duration_on=0.0, min_duration_off=min_duration_off)
        diarization.uri = uri
        exclusive_count = SlidingWindowFeature(np.minimum(count.data, 1).astype(np.int8), count.sliding_window)
        exclusive = to_annotation(self.reconstruct(segmentations, hard_clusters, exclusive_count),
                                  min_duration_on=0.0, min_duration_off=min_duration_off)
        exclusive.uri = uri
        labels = diarization.labels()
        mapping = {label: f"SPEAKER_{i:02d}" for i, label in enumerate(labels)}
        diarization = diarization.rename_labels(mapping=mapping)
        exclusive = exclusive.rename_labels(mapping=mapping)
        if centroids is not None:
            if len(labels) > centroids.shape[0]:
                centroids = np.pad(centroids, ((0, len(labels) - centroids.shape[0]), (0, 0)))
            centroids = centroids[list(labels)]
        timings["reconstruction"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        return DiarizeOutput(diarization, exclusive, centroids, stages if keep_stages else {}, timings)
