"""Publishing a conversion: a model card holding its parity table, and the upload to the Hugging Face Hub.

    python -m mlx_diar.convert --pytorch-path P --mlx-path M --parity-report R --upload-repo ORG/NAME

The parity table comes from a `harness compare` report directory (`meta.json`, `pipeline.csv`,
`layers.csv`) made from the same source: every source file's sha256 recorded by the report must be
the conversion's (`config.json`), and the report must hold the conversion's variant, all of its
targets met. The card (README.md) carries the Hub's metadata block: library, tags, base model
(a Hugging Face source id), the license of the source's model card when it has one. The upload
(`huggingface_hub.HfApi`: create_repo, upload_folder; the token from `--token`, HF_TOKEN or the
stored login) sends config.json without local paths, the weights and the card.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from mlx_diar.conversion.model_io import CONVERTER_VERSION, FORMAT_VERSION
from mlx_diar.conversion.sources import HF_ID, README_FILE
from mlx_diar.conversion.variant import Variant
from mlx_diar.errors import OptionError
from mlx_diar.fsutil import atomic_write

LIBRARY = "mlx-diar"
TAGS = ["mlx", "mlx-diar", "speaker-diarization", "pyannote", "pyannote-audio", "audio"]
PIPELINE_TAG = "voice-activity-detection"  # the Hub's nearest task: who speaks when
REPORT_FILES = ("meta.json", "pipeline.csv", "layers.csv")
EMBEDDING_MODES = ("sparse", "shared")  # `harness compare` names a fast mode's rows VARIANT-MODE
PCT = "{:.2%}"


@dataclasses.dataclass
class ParityReport:
    """What a card needs from a `harness compare` report directory."""

    path: Path
    meta: dict[str, Any]
    pipeline: list[dict[str, str]]
    layers: list[dict[str, str]]


def read_parity_report(path: str | Path) -> ParityReport:
    """Read a `harness compare` report directory; OptionError naming the file when it is not one."""
    path = Path(path)
    missing = [name for name in REPORT_FILES if not (path / name).is_file()]
    if missing:
        raise OptionError(f"--parity-report {path}: no {missing[0]}: not a `python -m harness compare` report directory")
    try:
        meta = json.loads((path / "meta.json").read_text())
        tables = [list(csv.DictReader((path / name).open(newline=""))) for name in REPORT_FILES[1:]]
        files = meta["checkpoint"]["files"]
        if not all(isinstance(f, dict) and "role" in f and "sha256" in f for f in files):
            raise TypeError("checkpoint.files entries need a role and a sha256")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as e:
        raise OptionError(f"--parity-report {path}: unreadable report ({type(e).__name__}: {e})") from None
    return ParityReport(path, meta, *tables)


def _source_hashes(config: dict[str, Any]) -> dict[str, str]:
    """{role: sha256} of every source file a full conversion's config.json records, named as the report names them."""
    hashes = {role: config[role]["source"]["sha256"] for role in ("segmentation", "embedding")}
    return hashes | {f"plda/{name}": sha for name, sha in config.get("plda", {}).get("sha256", {}).items()}


def variant_rows(report: ParityReport, config: dict[str, Any], model_dir: Path) -> tuple[str, list[dict], list[dict]]:
    """The report's MLX pipeline and layer rows of this conversion's variant, after checking the report was
    made from the same source files; OptionError naming the first difference otherwise."""
    mine = _source_hashes(config)
    theirs = {f["role"]: f["sha256"] for f in report.meta["checkpoint"]["files"]}
    for role in sorted(set(mine) | set(theirs)):
        if mine.get(role) != theirs.get(role):
            raise OptionError(f"--parity-report {report.path}: made from another source than {model_dir}: {role} "
                              f"sha256 {str(theirs.get(role))[:12]} in the report, {str(mine.get(role))[:12]} "
                              "in the conversion")
    quantization = config.get("quantization") or {}
    mode = "pure" if str(config["precision"]["name"]).endswith("-pure") else "default"
    name = Variant(config["dtype"], quantization.get("bits"), quantization.get("group_size"), mode).name
    names = {name, *(f"{name}-{fast}" for fast in EMBEDDING_MODES)}
    pipeline = [r for r in report.pipeline if r.get("side") == "mlx" and r.get("variant") in names]
    layers = [r for r in report.layers if r.get("variant") == name]
    if not pipeline:
        found = sorted({r.get("variant", "?") for r in report.pipeline if r.get("side") == "mlx"})
        raise OptionError(f"--parity-report {report.path}: no rows for this conversion's variant {name} "
                          f"(the report has {', '.join(found) or 'none'}): run harness compare with its dtype, "
                          "--pure or --quantize")
    failed = [r for r in pipeline + layers if r.get("passed") == "False"]
    if failed:
        row = failed[0]
        raise OptionError(f"--parity-report {report.path}: {name} misses a parity target ({row.get('file')} "
                          f"{row.get('layer', 'pipeline')}: {row.get('target')}); not published")
    return name, pipeline, layers


def _float(text: str | None) -> float:
    """A report cell as a number (NaN when empty or not a number)."""
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _cell(text: str | None, fmt: str = "{:.0f}") -> str:
    """A report cell formatted with `fmt`, a dash when not measured."""
    value = _float(text)
    return "–" if math.isnan(value) else fmt.format(value)


def parity_tables(pipeline: list[dict[str, str]], layers: list[dict[str, str]],
                  pyannote: dict[str, str | None]) -> list[str]:
    """The card's Markdown tables: one row per file (and fast mode), with pyannote's DER against the reference
    (`pyannote`, by file), and the worst layer per model."""
    lines = ["| file | variant | DER MLX vs pyannote | JER MLX vs pyannote | DER vs reference pyannote / MLX | "
             "speakers ref / pyannote / MLX | pass |", "|---|---|---|---|---|---|---|"]
    for row in pipeline:
        lines.append(f"| {row['file']} | {row['variant']} | {_cell(row.get('der_vs_pyannote'), PCT)} | "
                     f"{_cell(row.get('jer_vs_pyannote'), PCT)} | {_cell(pyannote.get(row['file']), PCT)} / "
                     f"{_cell(row.get('der_vs_reference'), PCT)} | {_cell(row.get('reference_speakers'))} / "
                     f"{_cell(row.get('pyannote_speakers'))} / {_cell(row.get('speakers'))} | "
                     f"{'yes' if row.get('passed') == 'True' else '–'} |")
    lines += ["", "| model | layers compared | worst layer | rel. L2 | min cosine | pass |", "|---|---|---|---|---|---|"]
    for model in sorted({r["model"] for r in layers}):
        rows = [r for r in layers if r["model"] == model]
        worst = max(rows, key=lambda r: -1.0 if math.isnan(_float(r.get("rel_l2"))) else _float(r.get("rel_l2")))
        cosine = min((_float(r.get("cosine")) for r in rows), default=math.nan, key=lambda c: math.inf if
                      math.isnan(c) else c)
        lines.append(f"| {model} | {len(rows)} | {worst['layer']} | {_cell(worst.get('rel_l2'), '{:.2e}')} | "
                     f"{_cell(str(cosine), '{:.6f}')} | {'yes' if all(r.get('passed') == 'True' for r in rows) else '–'} |")
    return lines


def model_card(config: dict[str, Any], report: ParityReport, model_dir: Path, repo_id: str | None) -> str:
    """README.md for the Hub: metadata block, how to use it, the parity tables of this conversion, its sources."""
    variant, pipeline, layers = variant_rows(report, config, model_dir)
    pyannote = {r.get("file", ""): r.get("der_vs_reference") for r in report.pipeline if r.get("side") == "pyannote"}
    source = config.get("source") or {}
    origin = str(source.get("origin") or config.get("origin", ""))
    meta: dict[str, Any] = {"library_name": LIBRARY}
    if source.get("license"):
        meta["license"] = source["license"]
    if HF_ID.match(origin) and not Path(origin).exists():
        meta["base_model"] = origin
    meta |= {"pipeline_tag": PIPELINE_TAG, "tags": TAGS}
    name = repo_id or model_dir.name
    revision = f" at revision `{source['revision']}`" if source.get("revision") else ""
    quantization = config.get("quantization")
    numbers = f"`{variant}` ({config['dtype']} weights" + (f", {quantization['bits']}-bit quantized in groups of "
                                                          f"{quantization['group_size']}" if quantization else "") + ")"
    tables = parity_tables(pipeline, layers, pyannote)
    checkpoint = report.meta["checkpoint"]
    hashes = [f"| {f['role']} | `{f['sha256']}` |" for f in checkpoint["files"]]
    seeded = [f"- {part}" for part in report.meta.get("seeded_parts", [])]
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
        f"# {name}", "",
        f"The pyannote speaker diarization pipeline `{Path(origin).name if Path(origin).is_absolute() else origin}`"
        f"{revision}, converted to [MLX](https://github.com/ml-explore/mlx) by mlx-diar (on-disk format "
        f"{FORMAT_VERSION}, converter {CONVERTER_VERSION}): {numbers}. It runs without torch or pyannote.audio.", "",
        "```python", "from mlx_diar import SpeakerDiarizationPipeline", "",
        f'pipeline = SpeakerDiarizationPipeline.from_pretrained("{name}")',
        'for turn, speaker in pipeline("audio.wav").speaker_diarization:',
        '    print(f"{speaker}: {turn.start:.2f}s - {turn.end:.2f}s")', "```", "",
        f"or `python -m mlx_diar diarize audio.wav --model {name} --rttm out.rttm`.", "",
        "## Parity with pyannote.audio", "",
        f"Measured by mlx-diar's harness (`python -m harness compare`) on this conversion's variant, pyannote.audio "
        f"run in the same process on the same audio ({report.meta.get('created', '?')}): "
        f"{report.meta.get('verdict', {}).get('text', '?')}.", "",
        *tables, "",
        *(["Parts of the source that are seeded or estimated, not trained:", "", *seeded, ""] if seeded else []),
        "## Source", "",
        "| file | sha256 |", "|---|---|", *hashes, "",
        f"License: {source['license']}, the source's." if source.get("license") else
        "License: none found in the source's model card; see the source.",
    ]
    return "\n".join(lines) + "\n"


def write_model_card(model_dir: str | Path, report_dir: str | Path, repo_id: str | None = None) -> Path:
    """Write README.md (the model card of `model_dir`, with the parity tables of `report_dir`); returns its path."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") != "full":
        raise OptionError(f"{model_dir}: only a full pipeline conversion is published (model_type "
                          f"{config.get('model_type')!r})")
    return atomic_write(model_dir / README_FILE, model_card(config, read_parity_report(report_dir), model_dir, repo_id))


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """config.json as published: local paths cut to their last two parts (`segmentation/pytorch_model.bin`)."""
    def short(text: str) -> str:
        return text if HF_ID.match(text) and not Path(text).is_absolute() else "/".join(Path(text).parts[-2:])

    public = json.loads(json.dumps(config))
    public["origin"] = short(str(public.get("origin", "")))
    if "source" in public:
        public["source"]["origin"] = short(str(public["source"].get("origin", "")))
    for role in ("segmentation", "embedding"):
        if role in public:
            public[role]["source"]["path"] = short(public[role]["source"]["path"])
    if "plda" in public:
        public["plda"]["source"] = short(str(public["plda"].get("source", "")))
    return public


def upload(model_dir: str | Path, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload `model_dir` (its card written) to the Hub repository `repo_id`, created if needed; returns its URL."""
    from huggingface_hub import HfApi

    model_dir = Path(model_dir)
    if not HF_ID.match(repo_id):
        raise OptionError(f"--upload-repo {repo_id!r}: expected ORG/NAME")
    if not (model_dir / README_FILE).is_file():
        raise OptionError(f"{model_dir}: no {README_FILE}: write its model card first (--parity-report)")
    config = json.loads((model_dir / "config.json").read_text())
    with tempfile.TemporaryDirectory(prefix="mlx-diar-upload-") as staging:
        stage = Path(staging)
        for path in sorted(model_dir.iterdir()):
            if path.is_file() and path.name != "config.json" and (path.suffix == ".safetensors" or
                                                                  path.name in (README_FILE, "model.safetensors.index.json")):
                try:
                    os.link(path, stage / path.name)
                except OSError:
                    shutil.copyfile(path, stage / path.name)
        (stage / "config.json").write_text(json.dumps(public_config(config), indent=2))
        api = HfApi(token=token)
        try:
            url = api.create_repo(repo_id, exist_ok=True, private=private)
            api.upload_folder(folder_path=str(stage), repo_id=repo_id, commit_message=(
                f"mlx-diar conversion (format {FORMAT_VERSION}, converter {CONVERTER_VERSION})"))
        except Exception as e:  # the hub client's HTTP, network and authentication errors
            raise OptionError(f"--upload-repo {repo_id}: upload failed ({type(e).__name__}: {e}); log in "
                              "(`hf auth login`) or pass --token / set HF_TOKEN with write access") from None
    return str(url)

