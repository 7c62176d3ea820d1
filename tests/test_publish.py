"""Publishing a conversion (`python -m mlx_diar.convert --parity-report R --upload-repo ORG/NAME`): the model card
holds the parity table of a real `harness compare` report of the same source and variant; the upload goes to a
local folder standing in for the Hub, which `from_pretrained` then loads as a Hugging Face id."""

from __future__ import annotations

import csv
import re
import json
import shutil
from pathlib import Path

import pytest
import yaml

from harness import compare
from mlx_diar.conversion import publish
from mlx_diar.conversion.convert import main as convert_main
from mlx_diar.conversion.sources import card_metadata
from tests.hf_cache import fake_snapshot, pipeline_with_card

CLIP = Path(__file__).parent / "data/speakrs/test_short.wav"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """`harness compare` of the fixture pipeline in float32 on a 3.3 s clip."""
    folder = tmp_path_factory.mktemp("parity")
    shutil.copyfile(CLIP, folder / "short.wav")
    assert compare.main(["--audio", str(folder / "short.wav"), "--dtype", "float32", "--out", str(folder / "report"),
                         "--quiet"]) == 0
    return folder / "report"


class FakeHub:
    """Stands in for `huggingface_hub.HfApi`: an upload copies the folder into `root/ORG/NAME`."""

    def __init__(self, root: Path) -> None:
        self.root, self.created = root, []

    def __call__(self, token=None) -> "FakeHub":
        return self

    def create_repo(self, repo_id: str, exist_ok: bool = False, private: bool = False) -> str:
        self.created.append((repo_id, private))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path: str, repo_id: str, commit_message: str = "") -> None:
        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch) -> FakeHub:
    import huggingface_hub

    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "HfApi", fake)
    return fake


def test_card_holds_the_report_and_the_upload_loads_back(fixture_root: Path, report: Path, tmp_path: Path, hub,
                                                         monkeypatch, capsys) -> None:
    from huggingface_hub import constants

    from mlx_diar.runtime.pipeline import SpeakerDiarizationPipeline

    # the source is a Hugging Face pipeline id (the fixture's files, with a licensed card) in a local hub cache
    cache = tmp_path / "hf"
    fake_snapshot(cache, "someone/pipeline", pipeline_with_card(fixture_root, tmp_path / "src"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    out = tmp_path / "converted"
    assert convert_main(["--pytorch-path", "someone/pipeline", "--mlx-path", str(out), "--parity-report", str(report),
                         "--upload-repo", "me/diar-f32", "--private"]) == 0, capsys.readouterr().err
    assert hub.created == [("me/diar-f32", True)]
    uploaded = tmp_path / "hub/me/diar-f32"
    assert sorted(p.name for p in uploaded.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                          "plda.safetensors"]
    card = (uploaded / "README.md").read_text()
    assert card == (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta == card_metadata(card)
    assert meta["library_name"] == "mlx-diar" and meta["base_model"] == "someone/pipeline"
    assert meta["license"] == "cc-by-4.0" and {"mlx", "speaker-diarization", "pyannote"} <= set(meta["tags"])
    assert meta["pipeline_tag"] == publish.PIPELINE_TAG
    row = next(r for r in csv.DictReader((report / "pipeline.csv").open()) if r["variant"] == "float32")
    assert f"| short | float32 | {float(row['der_vs_pyannote']):.2%} | {float(row['jer_vs_pyannote']):.2%} |" in card
    for entry in json.loads((report / "meta.json").read_text())["checkpoint"]["files"]:
        assert f"| {entry['role']} | `{entry['sha256']}` |" in card
    public = (uploaded / "config.json").read_text()
    assert str(tmp_path) not in public and json.loads(public)["source"]["revision"] is not None
    # what was uploaded loads back by its id, as a user would get it
    fake_snapshot(cache, "me/diar-f32", uploaded)
    loaded = SpeakerDiarizationPipeline.from_pretrained("me/diar-f32", cache_dir=cache)
    assert (loaded.models.path / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def _report_copy(report: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "report"
    shutil.copytree(report, copy)
    edit(copy)
    return copy


def _tamper_sha(folder: Path) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    meta["checkpoint"]["files"][1]["sha256"] = "0" * 64
    (folder / "meta.json").write_text(json.dumps(meta))


def _fail_rows(folder: Path) -> None:
    text = (folder / "pipeline.csv").read_text()
    (folder / "pipeline.csv").write_text(text.replace(",True\n", ",False\n"))


@pytest.mark.parametrize("args, edit, problem", [
    ([], _tamper_sha, "made from another source than .*: embedding sha256 000000000000 in the report"),
    (["--dtype", "float16"], None, "no rows for this conversion's variant float16 \\(the report has float32\\)"),
    ([], _fail_rows, "float32 misses a parity target"),
])
def test_a_report_of_another_conversion_is_refused(fixture_root: Path, report: Path, tmp_path: Path, hub, capsys,
                                                   args, edit, problem) -> None:
    used = _report_copy(report, tmp_path, edit) if edit else report
    code = convert_main(["--pytorch-path", str(fixture_root), "--mlx-path", str(tmp_path / "m"), "--parity-report",
                         str(used), "--upload-repo", "me/x", *args])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert re.search(problem, err), err
    assert not (tmp_path / "hub").exists() and not (tmp_path / "m/README.md").exists()


def test_publishing_options_are_checked_before_converting(fixture_root: Path, tmp_path: Path, hub, capsys) -> None:
    base = ["--pytorch-path", str(fixture_root), "--mlx-path", str(tmp_path / "m")]
    for extra, problem in ((["--upload-repo", "me/x"], "--upload-repo needs --parity-report"),
                           (["--parity-report", str(tmp_path)], "no meta.json: not a `python -m harness compare` report"),
                           (["--parity-report", str(tmp_path), "--model-type", "segmentation"],
                            "only a full pipeline conversion is published")):
        assert convert_main(base + extra) == 1
        assert problem in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / "hub").exists()
