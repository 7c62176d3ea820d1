"""Speaker discrimination for the fixture pipeline, estimated from synthetic speakers as VBx recipes do.

The fixture's embedding model is a seeded (untrained) `WeSpeakerResNet34`. Its pooled statistics
carry speaker information, but its random output layer `seg_1` buries it: every pipeline embedding
of a recording points the same way (unit-normalised, they lie ~0.1 apart whatever the speaker), so the
clustering's AHC stage (threshold 0.6) puts all of them into one cluster and no PLDA can split it
again. So the recipe estimates two things, on speakers synthesised by `harness.synth`, from
embeddings computed the way the pipeline computes them (10 s chunks holding three speakers, pooled
with the frames where one speaker speaks alone, through pyannote's own model):

1. The output layer `seg_1` (`estimate_output_layer`), from the pooled statistics of the first
   half of the training speakers: PCA to 256 dimensions, then LDA inside that subspace (within-class
   covariance shrunk towards a scaled identity by `SHRINK_OUTPUT`), each direction scaled by
   sqrt(e / (1 + e)) for its across/within variance ratio e. The trunk stays seeded.
2. The two files pyannote's VBx reads (`estimate`), from the other half of the speakers, embedded
   with that output layer: unseen by step 1, so the PLDA is not over-confident about them.
   - `xvec_transform.npz`: `mean1` (256,), `lda` (256, 128), `mean2` (128,), applied by
     `pyannote.audio.utils.vbx.vbx_setup` as
     `sqrt(128) * l2_norm(lda.T @ (sqrt(256) * l2_norm(x - mean1)) - mean2)`. `mean1` is the mean
     embedding; `lda` the 128 leading generalised eigenvectors of the across-class and (shrunk)
     within-class covariances of `y = sqrt(256) * l2_norm(x - mean1)`, normalised so that
     `lda.T Sw lda = I` (as Kaldi's `ivector-compute-lda`, which the VBx recipe uses); `mean2` the
     mean of `y @ lda`.
   - `plda.npz`: `mu` (128,), `tr` (128, 128), `psi` (128,). Two-covariance model of the
     transformed embeddings `u = mu + s + e`, `s ~ N(0, B)`, `e ~ N(0, W)` (Ioffe 2006): `mu` is
     their mean, `W` the pooled within-class covariance (shrunk by `SHRINK_PLDA`), `B` the
     covariance of the speaker means minus `W` times the mean of `1/n_k` (the part of `W` left in
     a mean of `n_k` embeddings): the method-of-moments estimate that Kaldi's
     `ivector-compute-plda` refines by EM. The simultaneous diagonalisation `V.T W V = I`,
     `V.T B V = diag(psi)` (generalised eigenproblem, `psi` floored at `PSI_FLOOR`, decreasing)
     gives `tr = V.T`: `vbx_setup` rebuilds `W = inv(tr.T tr)` and `B = inv(tr.T diag(1/psi) tr)`.

References: S. Ioffe, "Probabilistic linear discriminant analysis", ECCV 2006; F. Landini,
J. Profant, M. Diez, L. Burget, "Bayesian HMM clustering of x-vector sequences (VBx) in speaker
diarization", Computer Speech & Language 71, 2022, and its recipe (github.com/BUTSpeechFIT/VBx);
Kaldi's `ivector-compute-lda` and `ivector-compute-plda` (D. Povey et al.).

Any change to the recipe bumps `harness.paths.PLDA_RECIPE_VERSION`, which rebuilds the fixture.
`python -m harness plda [OTHER_DIR]` measures the fixture pipeline (and compares it with another
pipeline directory): held-out speaker identification, DER and speakers found on the bundled sample
and on synthetic conversations.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlx_diar.runtime.audio import SAMPLE_RATE
from mlx_diar.fsutil import atomic_path

if TYPE_CHECKING:
    from pyannote.core import Annotation

    from harness.synth import Voice

TRAIN_SPEAKERS = 150  # TRAIN_VOICES[:150]: the first half estimates the output layer, the second the PLDA
TRAIN_ROUNDS = 4  # chunks per training speaker
TRAIN_SEED = 0
EVAL_SPEAKERS = 36  # TEST_VOICES[:36], for the held-out speaker identification recorded in FIXTURE.md
EVAL_ROUNDS = 3
EVAL_SEED = 50_000
SPEAKERS_PER_CHUNK = 3
CHUNK_SECONDS = 10.0  # the pipeline's sliding window
MASK_FRAMES = 589  # segmentation-3.0 frames per chunk: the resolution of the pipeline's masks
MIN_SPEECH = 1.0  # seconds a speaker must speak alone in a chunk for its embedding to count
EMBEDDING_DIMENSION = 256
LDA_DIMENSION = 128
SHRINK_OUTPUT = 0.1
SHRINK_LDA = 0.3
SHRINK_PLDA = 0.3
MAX_WORKERS = 4  # processes sharing the pooled statistics (one torch thread each)
PSI_FLOOR = 1e-4  # across-class variances (in within-class units) below this carry no speaker information


@dataclass(frozen=True)
class Estimate:
    """Arrays of `xvec_transform.npz` and `plda.npz`, in pyannote's names."""

    mean1: np.ndarray
    mean2: np.ndarray
    lda: np.ndarray
    mu: np.ndarray
    tr: np.ndarray
    psi: np.ndarray

    def save(self, directory: Path) -> None:
        """Write `xvec_transform.npz` and `plda.npz` into `directory` (float64)."""
        with atomic_path(directory / "xvec_transform.npz", suffix=".npz") as tmp:
            np.savez(tmp, mean1=self.mean1, mean2=self.mean2, lda=self.lda)
        with atomic_path(directory / "plda.npz", suffix=".npz") as tmp:
            np.savez(tmp, mu=self.mu, tr=self.tr, psi=self.psi)


@dataclass(frozen=True)
class Chunks:
    """10 s synthetic chunks and, per chunk, the frames where each of its speakers speaks alone."""

    waveforms: np.ndarray  # (chunks, samples) float32
    masks: np.ndarray  # (chunks, SPEAKERS_PER_CHUNK, MASK_FRAMES) float32
    labels: np.ndarray  # (chunks, SPEAKERS_PER_CHUNK) voice index, -1 where it spoke alone too little


def _l2_norm(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _class_statistics(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled within-class covariance, covariance of the class means, and the class sizes."""
    classes, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if len(classes) < 2 or np.any(counts < 2):
        raise ValueError("need at least two classes with at least two samples each")
    means = np.zeros((len(classes), x.shape[1]))
    np.add.at(means, index, x)
    means /= counts[:, None]
    centred = x - means[index]
    within = centred.T @ centred / (len(x) - len(classes))
    across = np.cov(means, rowvar=False, bias=True)
    return within, across, counts


def _shrink(covariance: np.ndarray, amount: float) -> np.ndarray:
    """Pull a covariance towards the identity of the same trace (keeps it invertible on few samples)."""
    scale = np.trace(covariance) / len(covariance)
    return (1 - amount) * covariance + amount * scale * np.eye(len(covariance))


def _generalised_eigh(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (decreasing) and eigenvectors `V` of `a v = e b v`, with `V.T b V = I`."""
    from scipy.linalg import eigh

    values, vectors = eigh(a, b)
    return values[::-1], vectors[:, ::-1]


def estimate_output_layer(stats: np.ndarray, labels: np.ndarray,
                          dimension: int = EMBEDDING_DIMENSION) -> tuple[np.ndarray, np.ndarray]:
    """Weight (dimension, D) and bias (dimension,) of `seg_1` estimated from pooled statistics (see top)."""
    x = np.asarray(stats, dtype=np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    pca = vt[:dimension].T
    within, across, _ = _class_statistics((x - mean) @ pca, np.asarray(labels))
    ratio, vectors = _generalised_eigh(across, _shrink(within, SHRINK_OUTPUT))
    ratio = np.maximum(ratio, 0.0)
    weight = (pca @ vectors * np.sqrt(ratio / (1 + ratio))).T
    return weight, -weight @ mean


def estimate(embeddings: np.ndarray, labels: np.ndarray, lda_dimension: int = LDA_DIMENSION) -> Estimate:
    """Centering means, LDA and PLDA from speaker-labelled embeddings (see top)."""
    x = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    mean1 = x.mean(axis=0)
    y = np.sqrt(x.shape[1]) * _l2_norm(x - mean1)
    within, across, _ = _class_statistics(y, labels)
    _, vectors = _generalised_eigh(across, _shrink(within, SHRINK_LDA))
    lda = vectors[:, :lda_dimension]
    z = y @ lda
    mean2 = z.mean(axis=0)
    u = np.sqrt(lda_dimension) * _l2_norm(z - mean2)
    within, across, counts = _class_statistics(u, labels)
    across = across - within * np.mean(1.0 / counts)
    psi, vectors = _generalised_eigh(across, _shrink(within, SHRINK_PLDA))
    return Estimate(mean1=mean1, mean2=mean2, lda=lda, mu=u.mean(axis=0), tr=vectors.T.copy(),
                    psi=np.maximum(psi, PSI_FLOOR))


def speaker_id_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-nearest-neighbour speaker identification by cosine similarity."""
    f = _l2_norm(np.asarray(features, dtype=np.float64))
    similarity = f @ f.T
    np.fill_diagonal(similarity, -np.inf)
    labels = np.asarray(labels)
    return float(np.mean(labels[similarity.argmax(axis=1)] == labels))


def vbx_features(plda_dir: Path, embeddings: np.ndarray) -> np.ndarray:
    """What VBx compares: pyannote's `PLDA` features scaled by sqrt(phi) (`rho` in `utils.vbx.VBx`)."""
    from pyannote.audio.core.plda import PLDA

    plda = PLDA(plda_dir / "xvec_transform.npz", plda_dir / "plda.npz")
    return plda(np.asarray(embeddings, dtype=np.float64)) * np.sqrt(plda.phi)


def conversation_chunks(voices: Sequence[Voice], rounds: int, seed: int,
                        per_chunk: int = SPEAKERS_PER_CHUNK) -> Chunks:
    """Chunks shaped like the pipeline's: `per_chunk` speakers take one turn each, with silences and overlaps.

    Every round shuffles the voices into groups of `per_chunk`, so each voice speaks in `rounds`
    chunks (a different sentence each time, sentence seed `seed + voice index`) beside changing
    partners. Masks sample the reference at the segmentation model's frame rate and keep only the
    frames where the speaker speaks alone (as `embedding_exclude_overlap: true` does).
    """
    from harness.synth import mix, sentences, synthesize_many

    if len(voices) % per_chunk:
        raise ValueError(f"{len(voices)} voices do not split into groups of {per_chunk}")
    rng = np.random.default_rng(seed)
    from mlx_diar.runtime.pipeline import available_cores

    with concurrent.futures.ThreadPoolExecutor(available_cores()) as pool:  # one synthesiser process per core
        speech = list(pool.map(lambda k: synthesize_many(voices[k], sentences(rounds, seed=seed + k)),
                               range(len(voices))))
    length = int(CHUNK_SECONDS * SAMPLE_RATE)
    times = (np.arange(MASK_FRAMES) + 0.5) * CHUNK_SECONDS / MASK_FRAMES
    waveforms, masks, labels = [], [], []
    for r in range(rounds):
        for group in rng.permutation(len(voices)).reshape(-1, per_chunk):
            waveform, annotation = mix([(str(k), speech[k][r]) for k in group], rng)
            waveform = waveform[:length]
            if len(waveform) < length:
                noise = 10 ** (-60 / 20) * rng.standard_normal(length - len(waveform))
                waveform = np.concatenate([waveform, noise.astype(np.float32)])
            active = np.zeros((per_chunk, MASK_FRAMES), dtype=bool)
            for segment, _, label in annotation.itertracks(yield_label=True):
                active[list(group).index(int(label))] |= (times >= segment.start) & (times < segment.end)
            alone = active & (active.sum(axis=0) == 1)
            enough = alone.sum(axis=1) * CHUNK_SECONDS / MASK_FRAMES >= MIN_SPEECH
            waveforms.append(waveform)
            masks.append(alone.astype(np.float32))
            labels.append(np.where(enough, group, -1))
    return Chunks(np.stack(waveforms), np.stack(masks), np.stack(labels))


def _pooled_batches(checkpoint: Path, waveforms: np.ndarray, masks: np.ndarray, batch_size: int) -> np.ndarray:
    """`seg_1`'s inputs for these chunks, `batch_size` at a time (a helper process runs this on its share)."""
    import torch
    from pyannote.audio import Model

    torch.set_num_threads(1)
    model = Model.from_pretrained(checkpoint)
    model.eval()
    kept: list[np.ndarray] = []
    hook = model.resnet.seg_1.register_forward_pre_hook(lambda module, args: kept.append(args[0].numpy().copy()))
    try:
        with torch.inference_mode():
            for start in range(0, len(waveforms), batch_size):
                batch = torch.from_numpy(waveforms[start:start + batch_size])[:, None]
                model(batch, weights=torch.from_numpy(masks[start:start + batch_size]))
    finally:
        hook.remove()
    return np.concatenate(kept)


def pooled_statistics(checkpoint: Path, chunks: Chunks, batch_size: int = 16, workers: int | None = None) -> np.ndarray:
    """Pooled statistics (chunks, speakers, 5120) that pyannote's `WeSpeakerResNet34` hands its `seg_1`.

    Runs pyannote's own model as the pipeline does, `model(waveforms, weights=masks)`, all speakers
    of a chunk pooled from one pass of the trunk; a hook on `resnet.seg_1` keeps its input. The
    batches are shared between this process and `workers - 1` helper interpreters (default: one
    per core, at most `MAX_WORKERS`; `python -m harness.plda`, not multiprocessing children, which
    would re-run a caller's unguarded main script), each with one torch thread: faster than one
    process with several threads, and the same bits (each chunk is computed alone, in the same
    batches, whatever the thread count).
    """
    import torch

    from mlx_diar.cpu.blas import thread_environment
    from mlx_diar.runtime.pipeline import available_cores

    workers = max(1, min(workers or available_cores(), MAX_WORKERS))
    batches = np.array_split(np.arange(-(-len(chunks.waveforms) // batch_size)), workers)
    starts = [int(share[0]) * batch_size for share in batches if len(share)]
    shares = list(zip(starts, [*starts[1:], len(chunks.waveforms)]))
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, **thread_environment(1),
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    threads = torch.get_num_threads()
    helpers: list[tuple[subprocess.Popen, Path]] = []
    with tempfile.TemporaryDirectory(prefix="mlx-diar-pooled-") as tmp:
        try:
            for k, (start, end) in enumerate(shares[1:]):
                share = Path(tmp) / f"share{k}.npz"
                np.savez(share, waveforms=chunks.waveforms[start:end], masks=chunks.masks[start:end])
                helpers.append((subprocess.Popen([sys.executable, "-m", "harness.plda", str(checkpoint), str(share),
                                                  str(batch_size)], env=env, stdin=subprocess.DEVNULL), share))
            start, end = shares[0]
            parts = [_pooled_batches(checkpoint, chunks.waveforms[start:end], chunks.masks[start:end], batch_size)]
            for process, share in helpers:
                if process.wait() != 0:
                    raise RuntimeError(f"a pooled-statistics helper (python -m harness.plda) exited with status "
                                       f"{process.returncode}")
                parts.append(np.load(share.with_suffix(".npy")))
        finally:
            torch.set_num_threads(threads)
            for process, _ in helpers:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    return np.concatenate(parts)


def labelled(stats: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten (chunks, speakers, D) statistics to the rows of speakers with at least two labelled ones."""
    flat = labels.reshape(-1)
    speakers, counts = np.unique(flat[flat >= 0], return_counts=True)
    keep = np.isin(flat, speakers[counts >= 2])
    return stats.reshape(-1, stats.shape[-1])[keep], flat[keep]


def synthetic_statistics(checkpoint: Path) -> dict[str, np.ndarray]:
    """Pooled statistics of the training and held-out chunks (the expensive part of the recipe)."""
    from harness.synth import TEST_VOICES, TRAIN_VOICES

    out = {}
    for name, voices, rounds, seed in (("train", TRAIN_VOICES[:TRAIN_SPEAKERS], TRAIN_ROUNDS, TRAIN_SEED),
                                       ("eval", TEST_VOICES[:EVAL_SPEAKERS], EVAL_ROUNDS, EVAL_SEED)):
        chunks = conversation_chunks(voices, rounds, seed)
        out[f"{name}_stats"] = pooled_statistics(checkpoint, chunks)
        out[f"{name}_labels"] = chunks.labels
    return out


@dataclass(frozen=True)
class Fit:
    """The estimated output layer and PLDA, with what FIXTURE.md records about them."""

    weight: np.ndarray
    bias: np.ndarray
    plda: Estimate
    facts: dict[str, float | int]


def fit(statistics: dict[str, np.ndarray], seeded_weight: np.ndarray, seeded_bias: np.ndarray) -> Fit:
    """Output layer from the first half of the training speakers, PLDA from the second, scores on held-out ones."""
    stats, labels = labelled(statistics["train_stats"], statistics["train_labels"])
    first = labels < TRAIN_SPEAKERS // 2
    weight, bias = estimate_output_layer(stats[first], labels[first])
    plda = estimate(stats[~first] @ weight.T + bias, labels[~first])
    held_out, held_labels = labelled(statistics["eval_stats"], statistics["eval_labels"])
    embeddings = held_out @ weight.T + bias
    with tempfile.TemporaryDirectory() as tmp:
        plda.save(Path(tmp))
        features = vbx_features(Path(tmp), embeddings)
    facts = {
        "speakers": TRAIN_SPEAKERS, "chunks": len(statistics["train_labels"]), "embeddings": len(labels),
        "output_speakers": len(np.unique(labels[first])), "output_embeddings": int(first.sum()),
        "plda_speakers": len(np.unique(labels[~first])), "plda_embeddings": int((~first).sum()),
        "eval_speakers": len(np.unique(held_labels)), "eval_embeddings": len(held_labels),
        "accuracy_seeded": speaker_id_accuracy(held_out @ seeded_weight.T + seeded_bias, held_labels),
        "accuracy_embedding": speaker_id_accuracy(embeddings, held_labels),
        "accuracy_plda": speaker_id_accuracy(features, held_labels),
    }
    return Fit(weight=weight, bias=bias, plda=plda, facts=facts)


def synthetic_conversation(seed: int, duration: float = 13.0) -> tuple[np.ndarray, Annotation]:
    """A conversation of three test voices drawn by `seed` (voices the fixture build never heard)."""
    from harness.synth import TEST_VOICES, make_conversation

    rng = np.random.default_rng(seed)
    voices = [TEST_VOICES[i] for i in rng.choice(len(TEST_VOICES), 3, replace=False)]
    return make_conversation(voices, seed=seed, duration=duration)


def diarization_scores(pipeline, recordings: dict[str, tuple[np.ndarray, Annotation]]) -> dict[str, dict]:
    """DER, speakers found and reference speakers of pyannote's `pipeline` on each (waveform, reference)."""
    from harness.metrics import score, uem_for
    from reference.runner import run_reference

    result = {}
    for uri, (waveform, reference) in recordings.items():
        run = run_reference(pipeline, waveform, uri=uri, record_layers=False)
        metrics = score(reference, run.diarization, uem_for(run.meta["duration"]))
        result[uri] = {"der": metrics["der"], "speakers": len(run.diarization.labels()),
                       "reference_speakers": len(reference.labels())}
    return result


def evaluate(pipeline_dir: Path, clips: Iterable[int] = range(3)) -> dict[str, object]:
    """Held-out speaker identification and diarization results of one pipeline directory.

    Speaker identification uses chunks of TEST_VOICES[36:] (voices the build never saw), embedded by
    the pipeline's model, compared raw (cosine) and through its PLDA. Diarization: pyannote's
    pipeline on the bundled sample and on the `synthetic_conversation` of each seed in `clips`.
    """
    from harness.metrics import load_rttm
    from harness.paths import sample_audio
    from harness.synth import TEST_VOICES
    from mlx_diar.runtime.audio import load_audio
    from mlx_diar.conversion.checkpoint import load_checkpoint
    from reference.runner import load_pipeline

    checkpoint = pipeline_dir / "embedding/pytorch_model.bin"
    chunks = conversation_chunks(TEST_VOICES[EVAL_SPEAKERS:EVAL_SPEAKERS + 24], rounds=3, seed=60_000)
    stats, labels = labelled(pooled_statistics(checkpoint, chunks), chunks.labels)
    state = load_checkpoint(checkpoint)["state_dict"]
    embeddings = stats @ state["resnet.seg_1.weight"].astype(np.float64).T + state["resnet.seg_1.bias"].astype(np.float64)
    wav, rttm = sample_audio()
    recordings = {"sample": (load_audio(wav), next(iter(load_rttm(rttm).values())))}
    recordings |= {f"synthetic-{seed}": synthetic_conversation(seed) for seed in clips}
    return {
        "accuracy_cosine": speaker_id_accuracy(embeddings, labels),
        "accuracy_plda": speaker_id_accuracy(vbx_features(pipeline_dir / "plda", embeddings), labels),
        **diarization_scores(load_pipeline(pipeline_dir), recordings),
    }


def comparison_table(dirs: dict[str, Path]) -> str:
    """`evaluate` of each named pipeline directory, side by side as a Markdown table."""
    results = {name: evaluate(path) for name, path in dirs.items()}
    lines = ["| | " + " | ".join(f"{name} ({path})" for name, path in dirs.items()) + " |",
             "|---|" + "---|" * len(dirs)]
    for key, title in (("accuracy_cosine", "held-out speaker ID, cosine on embeddings"),
                       ("accuracy_plda", "held-out speaker ID, PLDA features")):
        lines.append(f"| {title} | " + " | ".join(f"{results[n][key]:.0%}" for n in dirs) + " |")
    first = next(iter(results.values()))
    for uri in (k for k in first if not k.startswith("accuracy")):
        cells = [f"DER {r[uri]['der']:.1%}, {r[uri]['speakers']}/{r[uri]['reference_speakers']} speakers"
                 for r in results.values()]
        lines.append(f"| {uri} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # a helper of `pooled_statistics`: python -m harness.plda CHECKPOINT SHARE.npz BATCH
    with np.load(sys.argv[2], allow_pickle=False) as share:
        pooled = _pooled_batches(Path(sys.argv[1]), share["waveforms"], share["masks"], int(sys.argv[3]))
    np.save(Path(sys.argv[2]).with_suffix(".npy"), pooled)
