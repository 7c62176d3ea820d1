"""MLX models mirroring pyannote.audio's (one module per pyannote model or block)."""

from mlx_diar.models.powerset import Powerset  # utils/powerset.Powerset
from mlx_diar.models.pyannet import PyanNet, PyanNetConfig  # models/segmentation/PyanNet
from mlx_diar.models.sincnet import SincNet, sinc_filters  # models/blocks/sincnet.SincNet
from mlx_diar.models.wespeaker import WeSpeakerConfig, WeSpeakerResNet34  # models/embedding/wespeaker
from mlx_diar.models.fbank import compute_fbank  # torchaudio.compliance.kaldi.fbank as wespeaker calls it

__all__ = ["Powerset", "PyanNet", "PyanNetConfig", "SincNet", "sinc_filters", "WeSpeakerConfig",
           "WeSpeakerResNet34", "compute_fbank"]
