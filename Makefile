VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install demo parity gpu-check test doctor clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh

SAMPLE = $$($(PY) -c "from harness.paths import sample_audio; print(sample_audio()[0])")

# The demo: float32, bfloat16's default policy (the faster half precision on the CPU, docs/precision.md)
# and 8-bit weights on pyannote's bundled sample; PASS or FAIL against harness/targets.py, no warm-up run
# (first-run timings, said in the report). pyannote's run is cached (harness/refcache.py) and the
# conversions too (~/.cache/mlx-diar), so a second `make demo` runs only the MLX side.
DEMO_VARIANTS = float32 bfloat16 bfloat16-q8g64

demo: install
	$(PY) -m harness compare --variant $(DEMO_VARIANTS) --no-warmup --check --audio $(SAMPLE) --out reports/demo
	@echo "The full matrix (float32, float16, bfloat16, each 8-bit and in sparse mode, on the sample and the"
	@echo "speakrs clips, with warm-up runs): make parity  (reports/parity)"

# float32, the float16/bfloat16 default policies and 8-bit weights, each also in sparse mode, on the
# bundled sample and the speakrs community-1 clips; exits non-zero (FAIL) when a target is missed.
PARITY_AUDIO = $(SAMPLE) tests/data/speakrs/test.wav tests/data/speakrs/test_short.wav

parity: install
	$(PY) -m harness compare --dtype all --quantize 8 --embedding-mode sparse --check --audio $(PARITY_AUDIO) \
		--out reports/parity

# On a machine with an MLX GPU backend (Metal; CUDA on Linux, installed by the command when missing): every
# variant's parity gates on its native numerics and the speed table of both kernel routes (docs/performance.md).
gpu-check: install
	$(PY) -m harness gpu-check --out reports/gpu-check

test: install
	$(PY) -m pytest -q

doctor: install
	$(PY) -m mlx_diar doctor

clean:
	rm -rf $(VENV) reports/*/
