"""The README's usage, end to end, on pyannote's bundled sample.

    python examples/basic_usage.py [SOURCE] [CACHE_DIR]

SOURCE defaults to the offline fixture pipeline (a pyannote pipeline directory: converted on first
use, then cached); a Hugging Face id such as pyannote/speaker-diarization-community-1 works too
(with a token), and so does a converted mlx-diar model directory or its id. CACHE_DIR is the Hugging
Face hub cache the conversion is cached in (default: HF_HUB_CACHE).
"""

import sys

from mlx_diar import SpeakerDiarizationPipeline


def main() -> None:
    if len(sys.argv) > 1:
        source = sys.argv[1]
    else:
        from harness.fixtures import fixture_dir

        source = fixture_dir()
    cache_dir = sys.argv[2] if len(sys.argv) > 2 else None
    from harness.paths import sample_audio

    audio, _ = sample_audio()

    pipeline = SpeakerDiarizationPipeline.from_pretrained(source, cache_dir=cache_dir,
                                                          device="cpu")  # or "gpu" on Apple silicon
    out = pipeline(str(audio))  # also accepts {"waveform": array, "sample_rate": sr}
    for turn, speaker in out.speaker_diarization:
        print(f"{speaker}: {turn.start:.2f}s - {turn.end:.2f}s")
    print("exclusive turns:", len(list(out.exclusive_speaker_diarization.itertracks())))
    print("speaker embeddings:", out.speaker_embeddings.shape)


if __name__ == "__main__":
    main()
