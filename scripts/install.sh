#!/usr/bin/env bash
# Idempotent install of mlx-diar with its reference (pyannote.audio) and dev extras into .venv.
# Extras: reference (pyannote.audio), dev (tests), cluster (Ray, for corpus runs on a cluster).
# Linux: CPU-only torch pinned by a constraints file, OpenBLAS for MLX, ffmpeg 5.1 libs for
# torchcodec, espeak-ng/festival for synthetic speech, chromium for the HTML report test.
# macOS: plain PyPI packages (mlx, torch, pyannote.audio), no workaround needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
say() { printf '[install] %s\n' "$*"; }

if [ "$(uname -s)" = "Linux" ]; then
  APT_PKGS="libavutil57 libavcodec59 libavformat59 libavdevice59 libavfilter8 libswscale6 libswresample4
            libopenblas0-pthread espeak-ng sox festival festvox-kallpc16k festvox-kdlpc16k chromium"
  missing=""
  for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      say "apt-get install:$missing"
      apt-get update -qq
      # shellcheck disable=SC2086
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
      say "WARNING: missing system packages (install them as root):$missing"
    fi
  fi
fi

[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP="$VENV/bin/python -m pip"

if [ "$(uname -s)" = "Linux" ]; then
  # A plain `torch` requirement pulls a multi-GB CUDA build; 2.13.0 is the CPU build on disk.
  printf 'torch==2.13.0\ntorchcodec==0.13.0\n' > "$VENV/constraints.txt"
  $PIP install -q --disable-pip-version-check torch==2.13.0
  $PIP install -q --disable-pip-version-check -c "$VENV/constraints.txt" "mlx[cpu]" -e ".[reference,dev,cluster]" "torchcodec==0.13.0"
else
  $PIP install -q --disable-pip-version-check mlx -e ".[reference,dev,cluster]"
fi

# PyPI's torchaudio 2.11.0 for Linux is a CUDA build: its compiled extensions need libcudart.
# Without them torchaudio runs in pure Python (kaldi.fbank and resample work), so drop them
# only when they cannot load.
if ! "$VENV/bin/python" -c "import torchaudio" >/dev/null 2>&1; then
  libdir=$("$VENV/bin/python" -c "import importlib.util,os;print(os.path.join(os.path.dirname(importlib.util.find_spec('torchaudio').origin),'lib'))")
  say "torchaudio's compiled libraries cannot load here (CUDA build without CUDA): removing $libdir/*.so so it runs in pure Python"
  rm -f "$libdir"/*.so
  "$VENV/bin/python" -c "import torchaudio" || { say "ERROR: torchaudio still fails to import"; exit 1; }
fi
"$VENV/bin/python" -m mlx_diar doctor
touch "$VENV/.installed"
say "done"
