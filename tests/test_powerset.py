"""mlx_diar.models.powerset.Powerset against the speakrs community-1 fixtures and pyannote's Powerset."""

from __future__ import annotations

from pathlib import Path

import mlx_diar  # noqa: F401  (loads OpenBLAS before MLX)
import mlx.core as mx
import numpy as np
import pytest

from mlx_diar.models import Powerset

SPEAKRS = Path(__file__).parent / "data" / "speakrs"
SIZES = [(n, k) for n in (2, 3, 4) for k in range(1, n + 1)]


@pytest.mark.parametrize("num_classes, max_set_size", SIZES)
def test_mapping_matches_fixture(num_classes: int, max_set_size: int) -> None:
    powerset = Powerset(num_classes, max_set_size)
    expected = np.load(SPEAKRS / f"powerset_mapping_{num_classes}_{max_set_size}.npy")
    np.testing.assert_array_equal(powerset.mapping, expected)
    assert powerset.num_powerset_classes == expected.shape[0]
    np.testing.assert_array_equal(powerset.cardinality, expected.sum(axis=1))


@pytest.mark.parametrize("backend", [np.asarray, mx.array], ids=["numpy", "mlx"])
def test_hard_decoding_matches_fixture(backend) -> None:
    logits = np.load(SPEAKRS / "powerset_input_logits.npy")
    expected = np.load(SPEAKRS / "powerset_hard_output.npy")
    decoded = np.asarray(Powerset(3, 2).to_multilabel(backend(logits)))
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parity
@pytest.mark.parametrize("num_classes, max_set_size", [(3, 2), (4, 3)])
def test_matches_pyannote(num_classes: int, max_set_size: int) -> None:
    import torch
    from pyannote.audio.utils.powerset import Powerset as PyannotePowerset

    theirs = PyannotePowerset(num_classes, max_set_size)
    ours = Powerset(num_classes, max_set_size)
    assert ours.powerset_classes == [tuple(sorted(s)) for s in theirs.powerset_classes]

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((2, 50, ours.num_powerset_classes)).astype(np.float32)
    log_probs = scores - np.log(np.exp(scores).sum(axis=-1, keepdims=True))
    scores[0, :3] = 0.0  # ties: the first maximum wins, as in torch.argmax
    for soft, x in ((False, scores), (True, log_probs)):
        expected = theirs.to_multilabel(torch.from_numpy(x), soft=soft).numpy()
        np.testing.assert_allclose(ours.to_multilabel(x, soft=soft), expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(
            np.asarray(ours.to_multilabel(mx.array(x), soft=soft)), expected, rtol=1e-6, atol=1e-7
        )

    multilabel = theirs.to_multilabel(torch.from_numpy(scores)).numpy()
    expected = theirs.to_powerset(torch.from_numpy(multilabel)).numpy()
    np.testing.assert_array_equal(ours.to_powerset(multilabel), expected)
    np.testing.assert_array_equal(np.asarray(ours.to_powerset(mx.array(multilabel))), expected)
