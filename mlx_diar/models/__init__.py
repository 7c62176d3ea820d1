"""MLX models mirroring pyannote.audio's (one module per pyannote model or block).

Exports are lazy: importing the package imports no model (nor MLX) until one is asked for.
"""

from typing import Any

_EXPORTS = {
    "Powerset": "mlx_diar.models.powerset",  # utils/powerset.Powerset
    "PyanNet": "mlx_diar.models.pyannet",  # models/segmentation/PyanNet
    "PyanNetConfig": "mlx_diar.models.pyannet",
    "SincNet": "mlx_diar.models.sincnet",  # models/blocks/sincnet.SincNet
    "sinc_filters": "mlx_diar.models.sincnet",
    "WeSpeakerConfig": "mlx_diar.models.wespeaker",  # models/embedding/wespeaker
    "WeSpeakerResNet34": "mlx_diar.models.wespeaker",
    "compute_fbank": "mlx_diar.models.fbank",  # torchaudio.compliance.kaldi.fbank as wespeaker calls it
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mlx_diar.models' has no attribute {name!r}")


__all__ = list(_EXPORTS)
