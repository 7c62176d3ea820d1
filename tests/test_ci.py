"""The parity workflow (.github/workflows/parity.yml): it parses, every file its steps name exists, its
expressions evaluate as GitHub's would, and the pull-request comment is one comment, updated on each push."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github/workflows/parity.yml"
sys.path.insert(0, str(ROOT / "scripts"))
import ci_dry_run  # noqa: E402


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(workflow: dict) -> list[dict]:
    return workflow["jobs"]["parity"]["steps"]


def test_the_workflow_parses_and_runs_on_pull_requests(workflow: dict) -> None:
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert int(workflow["env"]["PARITY_REPEAT"]) >= 5  # harness diff's speed verdicts need 5 runs a side


def test_every_file_a_step_names_exists(workflow: dict) -> None:
    named = set()
    for step in _steps(workflow):
        text = step.get("run", "") + str((step.get("with") or {}).get("script", ""))
        named |= set(re.findall(r"(?:\./)?((?:scripts|\.github|harness|tests)/[\w./-]+\.(?:sh|py|js))", text))
    assert {"scripts/parity_ci.sh", "scripts/install.sh", ".github/scripts/parity-comment.js"} <= named
    for path in named:
        assert (ROOT / path).is_file(), path
    subcommands = {m for step in _steps(workflow) for m in re.findall(r"parity_ci\.sh (\w+)", step.get("run", ""))}
    script = (ROOT / "scripts/parity_ci.sh").read_text()
    assert subcommands == {"report", "base", "diff", "summary"}
    assert all(f"cmd_{name}() {{" in script for name in subcommands)
    subprocess.run(["bash", "-n", str(ROOT / "scripts/parity_ci.sh")], check=True)


def test_actions_are_pinned_and_have_local_stand_ins(workflow: dict) -> None:
    for step in _steps(workflow):
        if "uses" in step:
            assert re.fullmatch(r"actions/[\w/-]+@v\d+", step["uses"]), step["uses"]
            assert step["uses"].split("@")[0] in ("actions/checkout", "actions/setup-python", "actions/cache/restore",
                                                  "actions/cache/save", "actions/upload-artifact",
                                                  "actions/github-script")
    ids = {step.get("id") for step in _steps(workflow)}
    for step in _steps(workflow):  # every steps.<id> an expression reads is a step of this job
        text = json.dumps(step)
        assert set(re.findall(r"steps\.([\w-]+)\.", text)) <= ids


def test_expressions_evaluate_as_github_would(workflow: dict) -> None:
    github = {"event_name": "pull_request", "event": {"pull_request": {"base": {"sha": "abc"}}, "before": ""}}
    context = ci_dry_run.Context(github, {})
    base = context.evaluate(workflow["env"]["BASE_SHA"].strip()[3:-2])
    assert base == "abc"
    context.github = {"event_name": "push", "event": {"before": "def"}}
    assert context.evaluate(workflow["env"]["BASE_SHA"].strip()[3:-2]) == "def"
    steps = {step.get("name"): step for step in _steps(workflow)}
    context.env = {"BASE_SHA": "0" * 40}
    assert not context.should_run(steps["Restore the base report"])  # a new branch: no base to compare with
    context.env = {"BASE_SHA": "abc"}
    context.steps = {"base-cache": {"outcome": "success", "outputs": {"cache-hit": "true"}}}
    assert context.should_run(steps["Restore the base report"]) and not context.should_run(steps["Base report"])
    context.steps["base-cache"]["outputs"]["cache-hit"] = "false"
    assert context.should_run(steps["Base report"])
    final = steps["Fail when parity failed or the diff found a regression"]
    context.steps |= {"head": {"outcome": "success"}, "diff": {"outcome": "success"}}
    assert not context.should_run(final)
    context.steps["diff"]["outcome"] = "failure"  # harness diff exit 1: a target newly missed or a slowdown
    assert context.should_run(final)
    context.failed = True  # an earlier step failed: only always() steps run
    assert context.should_run(steps["Job summary"]) and not context.should_run(steps["Base report"])


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_pull_request_comment_is_one_comment_updated_on_each_push(tmp_path: Path) -> None:
    """The github-script step's own code, with a stand-in for GitHub's API: created once, then updated."""
    step = next(s for s in _steps(yaml.safe_load(WORKFLOW.read_text())) if s.get("uses", "").startswith(
        "actions/github-script"))
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / ".github", checkout / ".github")
    (checkout / "reports/diff").mkdir(parents=True)
    said = []
    for push, text in enumerate(("## first <push>", "## second push")):
        (checkout / "reports/diff/diff.md").write_text(text)
        assert ci_dry_run._github_script(step["with"]["script"], checkout, tmp_path, {"RUN_ID": str(push), "PATH": ""},
                                         said.append)
    comments = json.loads((tmp_path / "comments.json").read_text())
    assert len(comments) == 1 and "## second push" in comments[0]["body"] and "first" not in comments[0]["body"]
    assert comments[0]["body"].startswith("<!-- mlx-diar parity diff -->\n")
    assert said == ["  github-script: created comment 1", "  github-script: updated comment 1"]
    long = subprocess.run(["node", "-e", "const m = require('./.github/scripts/parity-comment.js');"
                           "console.log(m.commentBody('x'.repeat(100000), 'u').length)"],
                          cwd=checkout, capture_output=True, text=True, check=True)
    assert int(long.stdout) <= 65000  # GitHub's limit on a comment
