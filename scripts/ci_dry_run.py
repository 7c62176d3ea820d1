"""Run .github/workflows/parity.yml here, step by step, as GitHub Actions would (no Docker, no `act`).

    python scripts/ci_dry_run.py --venv /path/to/.venv [--base REV] [--workdir DIR] [--skip NAME ...]
                                 [--env NAME=VALUE ...] [--plan]

What it does, in a temporary `git worktree` of HEAD (the checkout step):
- every `run:` block goes to `bash --noprofile --norc -eo pipefail` (GitHub's default shell) with the
  workflow's and the step's `env`, `${{ ... }}` expressions substituted, and GITHUB_STEP_SUMMARY,
  GITHUB_OUTPUT, GITHUB_EVENT_NAME, RUNNER_TEMP and RUNNER_OS set;
- every `if:` is evaluated (always(), success(), failure(), steps.*.outcome / outputs, env.*, github.*,
  ==, !=, &&, ||, !), `continue-on-error` is honoured and each step's outcome recorded;
- `actions/cache/restore` and `actions/cache/save` keep paths inside the checkout in WORKDIR/cache
  (exact key, then restore-keys prefixes); paths outside it (the project cache) stay where they are;
- `actions/github-script` runs its script with node, `github` a stand-in that keeps the pull request's
  comments in WORKDIR/comments.json (run twice: the second run updates the comment the first created);
- `actions/upload-artifact` copies the paths into WORKDIR/artifacts/NAME; checkout and setup-python
  are the worktree and this interpreter.
`--skip` names steps not run here (e.g. "System packages" needs sudo and Ubuntu's apt); `--venv` is
linked as the checkout's `.venv` in place of "Install into .venv" (which is then skipped).
The event is a pull request whose base is `--base` (default `main`). Exit status: the job's (0 or 1).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github/workflows/parity.yml"
TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||!|\(|\)|,)"
                   r"|(?P<name>[A-Za-z_][\w-]*(?:\.[\w-]+)*(?:\(\))?))")


class Context:
    """What `${{ }}` expressions read: github, env, steps, runner, and the job's state."""

    def __init__(self, github: dict, env: dict[str, str]) -> None:
        self.github, self.env = github, env
        self.steps: dict[str, dict[str, Any]] = {}
        self.failed = False  # a step failed without continue-on-error

    def lookup(self, name: str) -> Any:
        head, *rest = name.split(".")
        value: Any = {"github": self.github, "env": self.env, "steps": self.steps,
                      "runner": {"os": "Linux", "temp": self.env.get("RUNNER_TEMP", "")}}.get(head)
        for part in rest:
            value = value.get(part) if isinstance(value, dict) else None
        return "" if value is None else value

    def evaluate(self, expression: str) -> Any:
        """A GitHub Actions expression of the subset the workflow uses."""
        python, pos = [], 0
        while pos < len(expression):
            match = TOKEN.match(expression, pos)
            if not match or match.end() == pos:
                if expression[pos:].strip() == "":
                    break
                raise ValueError(f"cannot parse expression {expression!r} at {expression[pos:]!r}")
            pos = match.end()
            if match["str"] is not None:
                python.append(repr(match["str"][1:-1].replace("''", "'")))
            elif match["num"] is not None:
                python.append(match["num"])
            elif match["op"] is not None:
                python.append({"&&": " and ", "||": " or ", "!": " not "}.get(match["op"], match["op"]))
            elif match["name"] in ("always()", "success()", "failure()", "cancelled()"):
                python.append(repr({"always()": True, "success()": not self.failed, "failure()": self.failed,
                                    "cancelled()": False}[match["name"]]))
            elif match["name"] in ("true", "false"):
                python.append(repr(match["name"] == "true"))
            elif match["name"].startswith("hashFiles("):
                raise ValueError("hashFiles() takes arguments: handled by `substitute`")
            else:
                python.append(repr(self.lookup(match["name"])))
        return eval("".join(python), {"__builtins__": {}}, {})  # noqa: S307 (tokens above only)

    def substitute(self, text: str, checkout: Path) -> str:
        def one(match: re.Match) -> str:
            inner = match[1].strip()
            hashed = re.fullmatch(r"hashFiles\((.*)\)", inner)
            if hashed:
                import hashlib

                digest = hashlib.sha256()
                for pattern in re.findall(r"'([^']*)'", hashed[1]):
                    for path in sorted(checkout.glob(pattern)):
                        digest.update(path.read_bytes())
                return digest.hexdigest()
            value = self.evaluate(inner)
            return "true" if value is True else "false" if value is False else str(value)

        return re.sub(r"\$\{\{(.*?)\}\}", one, text)

    def should_run(self, step: dict) -> bool:
        condition = str(step.get("if", "success()"))
        condition = condition[3:-2] if condition.startswith("${{") else condition
        if not re.search(r"\b(always|success|failure|cancelled)\(\)", condition):
            condition = f"success() && ({condition})"
        return bool(self.evaluate(condition))


def _outputs(path: Path) -> dict[str, str]:
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                out[key] = value
    return out


def _inside(path: str, checkout: Path) -> Path | None:
    """`path` of a `with: path:` inside the checkout, or None (a path outside it stays where it is)."""
    if path.startswith(("~", "/")):
        return None
    return checkout / path


def run_action(uses: str, inputs: dict[str, str], checkout: Path, work: Path, env: dict[str, str],
               log) -> tuple[bool, dict[str, str]]:
    """The local stand-in for one `uses:` action: (success, outputs)."""
    name = uses.split("@")[0]
    paths = [p.strip() for p in str(inputs.get("path", "")).splitlines() if p.strip()]
    if name in ("actions/checkout", "actions/setup-python"):
        log(f"  {name}: the worktree at {checkout} and {sys.executable}")
        return True, {}
    if name == "actions/cache/restore":
        key, prefixes = inputs["key"], [p.strip() for p in str(inputs.get("restore-keys", "")).splitlines() if p.strip()]
        outputs = {"cache-primary-key": key, "cache-hit": "false"}
        if any(_inside(p, checkout) is None for p in paths):
            log(f"  cache restore {paths}: outside the checkout, this machine's copy is used as it is")
            return True, outputs
        store = work / "cache"
        found = store / key if (store / key).is_dir() else next(
            (d for prefix in prefixes for d in sorted(store.glob(f"{glob_escape(prefix)}*"), reverse=True)), None)
        if found is None:
            log(f"  cache restore: miss for {key}")
            return True, outputs
        for p in paths:
            if (found / p).exists():
                shutil.copytree(found / p, checkout / p, dirs_exist_ok=True)
        outputs |= {"cache-hit": str(found.name == key).lower(), "cache-matched-key": found.name}
        log(f"  cache restore: {'hit' if found.name == key else 'restored from'} {found.name}")
        return True, outputs
    if name == "actions/cache/save":
        if any(_inside(p, checkout) is None for p in paths):
            log(f"  cache save {paths}: outside the checkout, left where it is")
            return True, {}
        target = work / "cache" / inputs["key"]
        for p in paths:
            if (checkout / p).exists():
                shutil.copytree(checkout / p, target / p, dirs_exist_ok=True)
        log(f"  cache save: {target}")
        return True, {}
    if name == "actions/upload-artifact":
        target = work / "artifacts" / inputs["name"]
        for p in paths:
            if (checkout / p).exists():
                shutil.copytree(checkout / p, target / p, dirs_exist_ok=True)
            else:
                log(f"  upload-artifact: {p} not found ({inputs.get('if-no-files-found', 'warn')})")
        log(f"  upload-artifact: {target}")
        return True, {}
    if name == "actions/github-script":
        return _github_script(inputs["script"], checkout, work, env, log), {}
    raise ValueError(f"{uses}: no local stand-in for this action")


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


GITHUB_SCRIPT = """
const { createRequire } = require("module");
const fs = require("fs");
const store = process.env.DRY_RUN_COMMENTS;
const comments = fs.existsSync(store) ? JSON.parse(fs.readFileSync(store, "utf8")) : [];
const save = () => fs.writeFileSync(store, JSON.stringify(comments, null, 1));
const github = {
  paginate: async (method, args) => (await method(args)).data,
  rest: { issues: {
    listComments: async () => ({ data: comments }),
    updateComment: async ({ comment_id, body }) => {
      comments.find((c) => c.id === comment_id).body = body; save(); return { data: { id: comment_id } }; },
    createComment: async ({ body }) => {
      const id = comments.length + 1; comments.push({ id, body, user: { type: "Bot" } }); save();
      return { data: { id } }; },
  } },
};
const context = { repo: { owner: "local", repo: "dry-run" }, issue: { number: 1 }, runId: Number(process.env.RUN_ID),
                  serverUrl: "https://github.com", eventName: "pull_request" };
const core = { info: (m) => console.log(m), warning: (m) => console.warn(m), setFailed: (m) => { console.error(m); process.exitCode = 1; } };
(async () => {
  const require = createRequire(process.cwd() + "/");
SCRIPT
})().catch((e) => { console.error(e); process.exit(1); });
"""


def _github_script(script: str, checkout: Path, work: Path, env: dict[str, str], log) -> bool:
    node = shutil.which("node")
    if node is None:
        log("  github-script: node not found")
        return False
    source = work / "github-script.js"
    source.write_text(GITHUB_SCRIPT.replace("SCRIPT", script))
    done = subprocess.run([node, str(source)], cwd=checkout, env={**env, "DRY_RUN_COMMENTS": str(work / "comments.json")},
                          capture_output=True, text=True)
    for line in (done.stdout + done.stderr).strip().splitlines():
        log(f"  github-script: {line}")
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", type=Path, required=True, help="a virtual environment with the project installed")
    parser.add_argument("--base", default="main", help="the pull request's base revision (default main)")
    parser.add_argument("--workdir", type=Path, default=None, help="where caches, artifacts, comments and the "
                                                                   "summary are kept (default: a new temporary one)")
    parser.add_argument("--skip", nargs="*", default=["System packages"], help="steps not run here (by name)")
    parser.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE", help="override the workflow's env")
    parser.add_argument("--plan", action="store_true", help="list the steps and their `if:` without running them")
    args = parser.parse_args(argv)

    workflow = yaml.safe_load(WORKFLOW.read_text())
    job = next(iter(workflow["jobs"].values()))
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="parity-dry-run-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base_sha = subprocess.run(["git", "rev-parse", args.base], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    head_sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    run_id = str(int(time.time()))
    github = {"event_name": "pull_request", "ref": "refs/pull/1/merge", "sha": head_sha, "run_id": run_id,
              "event": {"pull_request": {"base": {"sha": base_sha}, "number": 1}, "before": ""}}
    env = {k: str(v) for k, v in (workflow.get("env") or {}).items()}
    context = Context(github, env)
    env = {name: context.substitute(value, ROOT) for name, value in env.items()}
    env |= dict(item.split("=", 1) for item in args.env)
    context.env = env

    def log(text: str) -> None:
        print(text, flush=True)

    if args.plan:
        for step in job["steps"]:
            log(f"{step.get('name') or step.get('uses')}: if {step.get('if', 'success()')}"
                + (f"; run: {step['run'].strip().splitlines()[0]}" if "run" in step else f"; uses {step.get('uses')}"))
        return 0
    checkout = work / "checkout"
    subprocess.run(["git", "worktree", "add", "--detach", str(checkout), head_sha], cwd=ROOT, check=True,
                   capture_output=True)
    (checkout / ".venv").symlink_to(args.venv.resolve())
    temp = work / "runner-temp"
    temp.mkdir(exist_ok=True)
    summary = work / "step-summary.md"
    summary.write_text("")  # this run's job summary
    results = []
    try:
        for index, step in enumerate(job["steps"]):
            name = step.get("name") or step.get("uses") or f"step {index}"
            sid = step.get("id", f"_{index}")
            if name in args.skip or (name == "Install into .venv"):
                log(f"== {name}: skipped here ({'--skip' if name in args.skip else '--venv ' + str(args.venv)})")
                context.steps[sid] = {"outcome": "skipped", "conclusion": "skipped", "outputs": {}}
                results.append((name, "skipped here"))
                continue
            if not context.should_run(step):
                log(f"== {name}: skipped (if: {step.get('if')})")
                context.steps[sid] = {"outcome": "skipped", "conclusion": "skipped", "outputs": {}}
                results.append((name, "skipped"))
                continue
            log(f"== {name}")
            step_env = {**os.environ, **env, **{k: context.substitute(str(v), checkout)
                                                 for k, v in (step.get("env") or {}).items()},
                        "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(work / f"output-{index}"),
                        "GITHUB_EVENT_NAME": "pull_request", "GITHUB_WORKSPACE": str(checkout),
                        "RUNNER_TEMP": str(temp), "RUNNER_OS": "Linux", "RUN_ID": run_id}
            started = time.monotonic()
            if "run" in step:
                script = context.substitute(step["run"], checkout)
                ok = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                                    cwd=checkout, env=step_env).returncode == 0
                outputs = _outputs(work / f"output-{index}")
            else:
                inputs = {k: context.substitute(str(v), checkout) for k, v in (step.get("with") or {}).items()}
                ok, outputs = run_action(step["uses"], inputs, checkout, work, step_env, log)
            outcome = "success" if ok else "failure"
            conclusion = "success" if ok or step.get("continue-on-error") else "failure"
            context.steps[sid] = {"outcome": outcome, "conclusion": conclusion, "outputs": outputs}
            context.failed |= conclusion == "failure"
            results.append((name, f"{outcome}{' (continue-on-error)' if outcome != conclusion else ''}, "
                                  f"{time.monotonic() - started:.0f} s"))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(checkout)], cwd=ROOT, capture_output=True)
    log("\n== steps")
    for name, result in results:
        log(f"  {name}: {result}")
    log(f"job: {'failure' if context.failed else 'success'}; summary {summary}; artifacts {work / 'artifacts'}; "
        f"comments {work / 'comments.json'}")
    return 1 if context.failed else 0


if __name__ == "__main__":
    sys.exit(main())
