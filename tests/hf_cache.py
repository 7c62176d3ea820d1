"""Sources for tests that never reach the Hub: a Hugging Face hub cache laid out as `snapshot_download` leaves
it, and a pipeline directory with a model card.

`models--ORG--NAME/blobs/<sha256>` holds each file once, `snapshots/<commit>/<path>` links to it
(relative symlinks, as the hub client makes them) and `refs/<branch>` names the commit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CARD = "---\nlicense: cc-by-4.0\ntags:\n- pyannote\n---\n# a pipeline\n"


def pipeline_with_card(fixture_root: Path, folder: Path) -> Path:
    """The fixture pipeline's config.yaml, models and PLDA copied into `folder`, with a model card (CARD)."""
    folder.mkdir(parents=True)
    for name in ("config.yaml", "segmentation", "embedding", "plda"):
        (shutil.copytree if (fixture_root / name).is_dir() else shutil.copyfile)(fixture_root / name, folder / name)
    (folder / "README.md").write_text(CARD)
    return folder


def fake_snapshot(cache: Path, repo_id: str, files: Path, commit: str = COMMIT, ref: str | None = "main",
                  replace: dict[str, str] | None = None) -> Path:
    """Put every file under `files` into `cache` as repository `repo_id` at `commit` (named by `ref`);
    `replace` writes {relative path: text} as plain files instead. Returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for src in sorted(p for p in files.rglob("*") if p.is_file()):
        blob = repo / "blobs" / hashlib.sha256(src.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, blob)
        link = snapshot / src.relative_to(files)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for name, text in (replace or {}).items():
        (snapshot / name).unlink(missing_ok=True)
        (snapshot / name).write_text(text)
    if ref is not None:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot
