"""The conversion guide's usage, end to end, on pyannote's bundled sample.

    python examples/basic_usage.py [PIPELINE] [MODEL_DIR]

PIPELINE defaults to the offline fixture pipeline (a Hugging Face id such as
pyannote/speaker-diarization-community-1 works too, with a token); MODEL_DIR to models/mlx_model.
"""

import sys
from pathlib import Path

from mlx_diar import SpeakerDiarizationPipeline, convert_pyannote_model


def main() -> None:
    if len(sys.argv) > 1:
        source = sys.argv[1]
    else:
        from harness.fixtures import fixture_dir

        source = fixture_dir()
    model_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("models/mlx_model")
    from harness.paths import sample_audio

    audio, _ = sample_audio()

    convert_pyannote_model(pytorch_path=source, mlx_path=model_dir, model_type="full", dtype="float32")
    pipeline = SpeakerDiarizationPipeline(model_path=model_dir, device="cpu")  # or "gpu" on Apple silicon
    out = pipeline(str(audio))  # also accepts {"waveform": array, "sample_rate": sr}
    for turn, speaker in out.speaker_diarization:
        print(f"{speaker}: {turn.start:.2f}s - {turn.end:.2f}s")
    print("exclusive turns:", len(list(out.exclusive_speaker_diarization.itertracks())))
    print("speaker embeddings:", out.speaker_embeddings.shape)


if __name__ == "__main__":
    main()
