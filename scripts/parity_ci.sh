#!/usr/bin/env bash
# The steps of .github/workflows/parity.yml, one subcommand each, so that the workflow and a local dry
# run (scripts/ci_dry_run.py) run the same code:
#
#   scripts/parity_ci.sh report TREE OUT      harness compare of the checkout TREE into OUT (exit: compare's)
#   scripts/parity_ci.sh base SHA OUT         the same for commit SHA, checked out in a temporary worktree
#   scripts/parity_ci.sh diff BASE HEAD OUT   harness diff of two reports into OUT (exit: diff's)
#   scripts/parity_ci.sh summary HEAD DIFF    diff.md, then HEAD's summary.md, appended to $GITHUB_STEP_SUMMARY
#
# Environment: PARITY_ARGS (compare's options; default the full matrix with --check), PARITY_REPEAT
# (timed runs per variant; default 5, given only to a checkout whose compare knows --repeat),
# PARITY_AUDIO (default: pyannote's sample and the speakrs clips), PY (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
PARITY_ARGS=${PARITY_ARGS:---dtype all --quantize 8 --embedding-mode sparse --check}
PARITY_REPEAT=${PARITY_REPEAT:-5}
say() { printf '[parity-ci] %s\n' "$*" >&2; }

cmd_report() {
  local tree out sample audio repeat=()
  tree=$(cd "$1" && pwd)
  mkdir -p "$2"
  out=$(cd "$2" && pwd)
  # shellcheck disable=SC2016
  sample=$(cd "$tree" && PYTHONPATH="$tree" "$PY" -c 'from harness.paths import sample_audio; print(sample_audio()[0])')
  audio=${PARITY_AUDIO:-"$sample tests/data/speakrs/test.wav tests/data/speakrs/test_short.wav"}
  audio=${audio//\{sample\}/$sample}
  if (cd "$tree" && PYTHONPATH="$tree" "$PY" -m harness compare --help) | grep -q -- "--repeat"; then
    repeat=(--repeat "$PARITY_REPEAT")
  else
    say "$tree: this compare has no --repeat: one timed run per variant (harness diff will say so)"
  fi
  say "compare in $tree -> $out"
  # shellcheck disable=SC2086
  (cd "$tree" && PYTHONPATH="$tree" "$PY" -m harness compare $PARITY_ARGS --audio $audio "${repeat[@]}" --out "$out")
}

cmd_base() {
  local sha=$1 out=$2 tree status=0
  tree=$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/parity-base.XXXXXX")
  rmdir "$tree"
  git worktree add --detach "$tree" "$sha" >&2
  cmd_report "$tree" "$out" || status=$?
  git worktree remove --force "$tree"
  say "base report of $sha: compare exit status $status (a parity failure of the base does not stop the diff)"
  [ -f "$out/pipeline.csv" ]
}

cmd_diff() {
  local base=$1 head=$2 out=$3
  mkdir -p "$out"
  if [ ! -f "$base/pipeline.csv" ]; then
    printf '## No base report\n\nNo report of the base revision could be built or restored: nothing to compare the head with.\n' \
      > "$out/diff.md"
    say "no base report in $base: diff skipped"
    return 0
  fi
  "$PY" -m harness diff "$base" "$head" --out "$out"
}

cmd_summary() {
  local head=$1 diff=$2 target=${GITHUB_STEP_SUMMARY:-/dev/stdout}
  {
    if [ -f "$diff/diff.md" ]; then cat "$diff/diff.md"; else echo "No diff.md was written: see the diff step's log."; fi
    echo
    if [ -f "$head/summary.md" ]; then
      echo "## Head report"
      echo
      cat "$head/summary.md"
    else
      echo "No $head/summary.md was written: see the head report step's log."
    fi
  } >> "$target"
}

command=${1:-}
shift || true
case "$command" in
  report|base|diff|summary) "cmd_$command" "$@" ;;
  *) echo "usage: scripts/parity_ci.sh report TREE OUT | base SHA OUT | diff BASE HEAD OUT | summary HEAD DIFF" >&2; exit 2 ;;
esac
