"""`python -m harness profile`: runs end to end on the offline fixture and names every layer it times."""

from __future__ import annotations

from harness.profile import main


def test_profile_segmentation_runs(tmp_path, capsys) -> None:
    out = tmp_path / "profile.md"
    assert main(["--models", "segmentation", "--batch", "1", "--rounds", "1", "--threads", "2",
                 "--out", str(out)]) == 0
    report = out.read_text()
    assert report.strip() == capsys.readouterr().out.strip()
    for needle in ("BLAS:", "intra-op threads: 2", "### Segmentation (PyanNet)", "| sincnet.conv1d.0 |",
                   "| lstm (MLX: lstm.0, lstm.1, lstm.2, lstm.3) |", "| classifier |", "cores busy",
                   "Whole segmentation model over the pipeline's CPU lanes"):
        assert needle in report, needle
    rows = [line for line in report.splitlines() if line.startswith("| sincnet.conv1d.0 |")]
    torch_ms, mlx_ms = (float(cell) for cell in rows[0].split("|")[2:4])
    assert torch_ms > 0 and mlx_ms > 0
