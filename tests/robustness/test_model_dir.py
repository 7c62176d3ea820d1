"""`load_model` checks a model directory before using it (issue 12, item 4): one ModelDirError per problem."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mlx_diar.errors import ModelDirError
from mlx_diar.conversion.model_io import INDEX_FILE, load_model


@pytest.fixture
def broken(mlx_model_dir: Path, tmp_path: Path):
    """broken(edit) -> a copy (hard links) of the session's float32 'full' model, config.json edited."""
    model = mlx_model_dir

    def make(edit=None, raw: str | None = None) -> Path:
        out = tmp_path / f"model{len(list(tmp_path.iterdir()))}"
        shutil.copytree(model, out, copy_function=os.link)
        config = json.loads((model / "config.json").read_text())
        if edit is not None:
            config = edit(config) or config
        (out / "config.json").unlink()
        (out / "config.json").write_text(raw if raw is not None else json.dumps(config))
        return out
    return make


def _set(path: str, value):
    def edit(config):
        node = config
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


@pytest.mark.parametrize("edit, raw, field", [
    (None, "[1, 2]", "must be a JSON object"),
    (None, "{not json", "invalid JSON"),
    (_set("dtype", "float64"), None, "dtype"),
    (_set("format_version", "1"), None, "format_version"),
    (_set("quantization", {"bits": 3, "group_size": 64}), None, "quantization"),
    (_set("segmentation.class", "os.system"), None, "segmentation.class"),
    (_set("segmentation.config.duration", "10"), None, "segmentation.config.duration"),
    (_set("segmentation.config.duration", 0), None, "segmentation.config.duration"),
    (_set("segmentation.config.duration", -5.0), None, "segmentation.config.duration"),
    (_set("segmentation.config.sincnet_stride", 2.5), None, "segmentation.config.sincnet_stride"),
    (_set("embedding.config.frame_shift", 0), None, "embedding.config.frame_shift"),
    (_set("embedding.config.num_blocks", [3, "4", 6, 3]), None, "embedding.config.num_blocks"),
    (_set("embedding.config.snip_edges", "yes"), None, "embedding.config.snip_edges"),
    (_set("pipeline.params.segmentation_step", 0), None, "pipeline.params.segmentation_step"),
    (_set("pipeline.params.segmentation_step", -0.1), None, "pipeline.params.segmentation_step"),
    (_set("pipeline.params.embedding_batch_size", 0), None, "pipeline.params.embedding_batch_size"),
    (_set("pipeline", [1]), None, "pipeline must be an object"),
    (_set("plda", {"file": "/etc/passwd"}), None, "plda.file"),
    (_set("plda", {"file": "../plda.safetensors"}), None, "plda.file"),
    (_set("plda", "plda.safetensors"), None, "plda must be an object"),
])
def test_bad_config_is_one_model_dir_error(broken, edit, raw, field) -> None:
    path = broken(edit, raw)
    with pytest.raises(ModelDirError) as e:
        load_model(path)
    assert str(path / "config.json") in str(e.value) and field in str(e.value)


def _index(path: Path, weight_map: dict) -> None:
    (path / "model.safetensors").rename(path / "model-00001-of-00001.safetensors")
    (path / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("name", ["/etc/hosts", "../model-00001-of-00001.safetensors", "sub/x.safetensors", 3])
def test_index_entries_must_be_plain_names_inside(broken, name) -> None:
    path = broken()
    _index(path, {"segmentation.linear.0.weight": name})
    with pytest.raises(ModelDirError, match=r"weight_map\['segmentation\.linear\.0\.weight'\]") as e:
        load_model(path)
    assert str(path / INDEX_FILE) in str(e.value)


def test_symlinks_out_of_the_directory_are_refused(broken, tmp_path: Path) -> None:
    path = broken()
    outside = tmp_path / "outside.safetensors"
    (path / "plda.safetensors").rename(outside)
    (path / "plda.safetensors").symlink_to(outside)
    with pytest.raises(ModelDirError, match="plda.file = 'plda.safetensors' resolves outside"):
        load_model(path)
    path2 = broken()
    (path2 / "model.safetensors").rename(tmp_path / "w.safetensors")
    (path2 / "model.safetensors").symlink_to(tmp_path / "w.safetensors")
    with pytest.raises(ModelDirError, match="resolves outside"):
        load_model(path2)


def test_index_not_an_object(broken) -> None:
    path = broken()
    (path / INDEX_FILE).write_text("[]")
    with pytest.raises(ModelDirError, match="not a safetensors index"):
        load_model(path)


def test_a_valid_copy_loads(broken) -> None:
    assert load_model(broken()).plda is not None
