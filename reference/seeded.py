"""Seeded (untrained) pyannote `WeSpeakerResNet34`: the one recipe behind the fixture's embedding trunk.

The offline fixture pipeline saves this model (with an estimated output layer) as its
`embedding/pytorch_model.bin`; the embedding parity tests compare MLX against the same model
built here. BatchNorm weights and running statistics are randomised too, so that a BatchNorm
mistake (eps, affine order, folding) cannot hide behind identity statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pyannote.audio.models.embedding.wespeaker import WeSpeakerResNet34

EMBEDDING_SEED = 0
CHUNK_SECONDS = 5.0  # the duration pyannote's wespeaker converter writes into the specifications


def seeded_wespeaker(seed: int = EMBEDDING_SEED,
                     output_layer: tuple[np.ndarray, np.ndarray] | None = None) -> WeSpeakerResNet34:
    """`WeSpeakerResNet34` with weights from torch seed `seed` and seeded BatchNorm parameters, in eval mode.

    `output_layer` (weight, bias) replaces the seeded `resnet.seg_1`.
    """
    torch.manual_seed(seed)
    model = WeSpeakerResNet34()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
        if output_layer is not None:
            model.resnet.seg_1.weight.copy_(torch.from_numpy(output_layer[0]))
            model.resnet.seg_1.bias.copy_(torch.from_numpy(output_layer[1]))
    return model.eval()


def save_pyannote_checkpoint(model: WeSpeakerResNet34, dest: Path) -> None:
    """Save `model` as pyannote.audio.models.embedding.wespeaker.convert does: state_dict + on_save_checkpoint.

    torch names the archive inside the file after the file (`pytorch_model/...`), so this writes
    `dest` directly: callers write into a directory that is renamed into place as a whole.
    """
    import lightning
    from pyannote.audio.core.task import Problem, Resolution, Specifications

    model.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK,
                                          duration=CHUNK_SECONDS)
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    checkpoint["pytorch-lightning_version"] = lightning.__version__
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, dest)
