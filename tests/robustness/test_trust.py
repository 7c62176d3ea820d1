"""Pipeline directories are untrusted: generated payloads must never run (issue 12, item 1).

Each attack is generated here: a payload that would write a marker file when executed. A
control shows that pyannote.audio itself, handed the same directory, runs the payload
(the marker appears); then `reference.runner.load_pipeline`, `resolve_pipeline` and the
converter refuse it with an UnsafeSourceError naming the file and the field, and the marker
does not appear.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

from mlx_diar.conversion.convert import convert_pyannote_model
from mlx_diar.errors import CheckpointError, UnsafeSourceError
from mlx_diar.conversion.sources import resolve_pipeline
from mlx_diar.conversion.trust import check_config, stage_pipeline, vet_checkpoint
from tests.hf_cache import fake_snapshot

torch = pytest.importorskip("torch")

ROLES = ("segmentation", "embedding", "plda")


class _Exec:
    """Pickles as `exec(code)`: what a malicious checkpoint does on a plain torch.load."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def _write_marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('payload ran')"


@pytest.fixture(scope="module")
def clean(fixture_root: Path, tmp_path_factory) -> Path:
    """A copy of the fixture pipeline (config.yaml, segmentation/, embedding/, plda/) in a temp dir."""
    root = tmp_path_factory.mktemp("clean") / "pipeline"
    for role in ROLES:
        shutil.copytree(fixture_root / role, root / role)
    shutil.copy(fixture_root / "config.yaml", root / "config.yaml")
    return root


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / f"MARKER-{uuid.uuid4().hex}"


@pytest.fixture
def payload_module(tmp_path: Path, marker: Path, monkeypatch) -> str:
    """An importable module whose `run(**kwargs)` writes the marker: the 'class' a config can name."""
    name = f"payload_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(f"def run(*args, **kwargs):\n    {_write_marker_code(marker)}\n"
                                         "    return object()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{name}.run"


@pytest.fixture
def evil_checkpoint(tmp_path: Path, marker: Path) -> Path:
    """A folder outside the pipeline holding a pytorch_model.bin that writes the marker when unpickled."""
    folder = tmp_path / "elsewhere" / "evil"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {}, "pyannote.audio": {}, "payload": _Exec(_write_marker_code(marker))},
               folder / "pytorch_model.bin")
    return folder


def _pipeline(clean: Path, tmp_path: Path, edit, name: str = "config.yaml") -> Path:
    """A pipeline dir whose files are hard links to `clean`, with `edit(config)` applied to the YAML `name`."""
    root = tmp_path / "pipeline"
    shutil.copytree(clean, root, copy_function=os.link)
    config = yaml.safe_load((clean / "config.yaml").read_text())
    edit(config)
    (root / name).unlink(missing_ok=True)  # a hard link to clean/config.yaml: never write through it
    (root / name).write_text(yaml.safe_dump(config))
    return root


def _control(root: Path, marker: Path, config: str = "config.yaml") -> None:
    """Control: pyannote.audio handed the directory directly (as the reference runner used to) runs the payload."""
    from pyannote.audio import Pipeline

    with contextlib.suppress(Exception):
        Pipeline.from_pretrained(root / config)
    assert marker.exists(), "control: the payload is live, pyannote runs it"
    marker.unlink()


def _refused(root: Path, marker: Path, field: str, config: str | None = None) -> str:
    """Every entry point refuses the directory, naming the file and `field`; the marker never appears."""
    from reference.runner import load_pipeline

    messages = []
    for load in (lambda: load_pipeline(root, config=config), lambda: resolve_pipeline(root, config=config),
                 lambda: convert_pyannote_model(root, root.parent / "out", "full", pipeline_config=config)):
        with pytest.raises(UnsafeSourceError) as e:
            load()
        messages.append(str(e.value))
        assert str(root / (config or "config.yaml")) in str(e.value) and field in str(e.value)
    assert not marker.exists(), "the payload ran"
    assert not (root.parent / "out").exists()
    return messages[0]


def test_pipeline_class_payload(clean, tmp_path, marker, payload_module) -> None:
    def edit(config):
        config["pipeline"]["name"] = payload_module

    root = _pipeline(clean, tmp_path, edit)
    _control(root, marker)
    _refused(root, marker, "pipeline.name")


def test_preprocessors_payload(clean, tmp_path, marker, payload_module) -> None:
    def edit(config):
        config["preprocessors"] = {"audio": {"name": payload_module, "params": {"x": 1}}}

    root = _pipeline(clean, tmp_path, edit)
    _control(root, marker)
    _refused(root, marker, "preprocessors")


def test_subfolder_dict_payload(clean, tmp_path, marker, evil_checkpoint) -> None:
    def edit(config):
        config["pipeline"]["params"]["segmentation"] = {"checkpoint": str(evil_checkpoint.parent), "subfolder": "evil"}

    root = _pipeline(clean, tmp_path, edit)
    _control(root, marker)
    _refused(root, marker, "pipeline.params.segmentation")


@pytest.mark.parametrize("entry", ["$model/../elsewhere/evil", "$model/{abs}", "{abs}"])
def test_other_config_with_models_outside(clean, tmp_path, marker, evil_checkpoint, entry) -> None:
    """`--config OTHER.yaml` naming models outside the directory: `..`, `$model//abs`, a plain path."""
    value = entry.format(abs=evil_checkpoint)

    def edit(config):
        config["pipeline"]["params"]["segmentation"] = value

    root = _pipeline(clean, tmp_path, edit, name="other.yaml")
    _control(root, marker, "other.yaml")
    _refused(root, marker, "pipeline.params.segmentation", config="other.yaml")


@pytest.mark.parametrize("link", ["folder", "file"])
def test_symlink_escape(clean, tmp_path, marker, evil_checkpoint, link) -> None:
    root = _pipeline(clean, tmp_path, lambda config: None)
    if link == "folder":
        shutil.rmtree(root / "segmentation")
        (root / "segmentation").symlink_to(evil_checkpoint, target_is_directory=True)
    else:
        (root / "segmentation/pytorch_model.bin").unlink()
        (root / "segmentation/pytorch_model.bin").symlink_to(evil_checkpoint / "pytorch_model.bin")
    _control(root, marker)
    message = _refused(root, marker, "pipeline.params.segmentation")
    assert "outside" in message


def test_plda_outside(clean, tmp_path, marker) -> None:
    outside = tmp_path / "plda-elsewhere"
    shutil.copytree(clean / "plda", outside)

    def edit(config):
        config["pipeline"]["params"]["plda"] = f"$model/../{outside.name}"

    root = _pipeline(clean, tmp_path, edit)
    _refused(root, marker, "pipeline.params.plda")


def test_revision_suffix_refused(clean, tmp_path, marker) -> None:
    def edit(config):
        config["pipeline"]["params"]["embedding"] = "$model/embedding@v0"

    root = _pipeline(clean, tmp_path, edit)
    assert "revision suffix" in _refused(root, marker, "pipeline.params.embedding")


@pytest.mark.parametrize("name", ["../config.yaml", "/etc/passwd", "sub/config.yaml", "..", ""])
def test_config_must_be_a_plain_file_name(clean, name) -> None:
    with pytest.raises(UnsafeSourceError, match="plain file name"):
        resolve_pipeline(clean, config=name)


def test_config_file_symlinked_outside_is_refused(clean, tmp_path) -> None:
    root = _pipeline(clean, tmp_path, lambda config: None)
    (tmp_path / "outside.yaml").write_text((clean / "config.yaml").read_text())
    (root / "other.yaml").symlink_to(tmp_path / "outside.yaml")
    with pytest.raises(UnsafeSourceError, match="outside"):
        resolve_pipeline(root, config="other.yaml")


@pytest.mark.parametrize("edit, field", [
    (lambda c: c.update(device="cpu", extra=1), "extra"),
    (lambda c: c["pipeline"]["params"].update(token="hf_x"), "pipeline.params.token"),
    (lambda c: c["pipeline"]["params"].update(cache_dir="/tmp"), "pipeline.params.cache_dir"),
    (lambda c: c["pipeline"].update(class_path="x"), "pipeline.class_path"),
    (lambda c: c["params"].update(preprocess={"x": 1}), "params.preprocess"),
])
def test_unknown_keys_are_refused(fixture_root, edit, field) -> None:
    config = yaml.safe_load((fixture_root / "config.yaml").read_text())
    edit(config)
    with pytest.raises(UnsafeSourceError, match=field.replace(".", r"\.")):
        check_config(config, Path("config.yaml"))


@pytest.mark.parametrize("key, value, problem", [
    ("segmentation_batch_size", 0, "integer >= 1"),
    ("embedding_batch_size", "32", "integer >= 1"),
    ("segmentation_step", 0, "> 0"),
    ("segmentation_step", float("nan"), "> 0"),
    ("clustering", "os.system", "must be one of"),
    ("embedding_exclude_overlap", "yes", "true or false"),
])
def test_malformed_values_are_refused(fixture_root, key, value, problem) -> None:
    config = yaml.safe_load((fixture_root / "config.yaml").read_text())
    config["pipeline"]["params"][key] = value
    with pytest.raises(CheckpointError, match=problem) as e:
        check_config(config, Path("config.yaml"))
    assert f"pipeline.params.{key}" in str(e.value)


def test_checkpoint_must_name_a_pyannote_model_class(tmp_path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save({"state_dict": {}, "pyannote.audio": {"architecture": {"module": "os", "class": "system"}}}, path)
    with pytest.raises(UnsafeSourceError, match=r"only classes of pyannote\.audio\.models"):
        vet_checkpoint(path)


def test_staging_vets_the_copies_and_rewrites_the_config(clean, tmp_path) -> None:
    source = resolve_pipeline(clean)
    staged = stage_pipeline(source, tmp_path / "staged")
    config = yaml.safe_load((staged / "config.yaml").read_text())
    assert {config["pipeline"]["params"][r] for r in ROLES} == {f"$model/{r}" for r in ROLES}
    assert (staged / "segmentation/pytorch_model.bin").read_bytes() == source.segmentation.read_bytes()


def test_reference_loads_a_clean_pipeline_and_leaves_no_copy(clean) -> None:
    from reference.runner import load_pipeline

    before = set(Path(tempfile.gettempdir()).glob("mlx-diar-vetted-*"))
    pipeline = load_pipeline(clean)
    assert pipeline.klustering == "VBxClustering" and pipeline._mlx_diar_source.root == clean
    assert set(Path(tempfile.gettempdir()).glob("mlx-diar-vetted-*")) == before


def test_hugging_face_download_gets_the_same_checks(clean, tmp_path, marker, payload_module, monkeypatch) -> None:
    import huggingface_hub

    good = fake_snapshot(tmp_path / "good", "someone/pipeline", clean)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(good))
    assert resolve_pipeline("someone/pipeline").segmentation.resolve().is_relative_to(tmp_path / "good")

    def edit(config):
        config["preprocessors"] = {"audio": {"name": payload_module}}

    config = yaml.safe_load((clean / "config.yaml").read_text())
    edit(config)
    bad = fake_snapshot(tmp_path / "bad", "someone/pipeline", clean, replace={"config.yaml": yaml.safe_dump(config)})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(bad))
    with pytest.raises(UnsafeSourceError, match="preprocessors"):
        resolve_pipeline("someone/pipeline")
    assert not marker.exists()
