VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install demo test doctor clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh

# float32, the float16/bfloat16 default policies and 8-bit weights, on the bundled sample and the
# speakrs community-1 clips; exits non-zero (FAIL) when a target of harness/targets.py is missed.
DEMO_AUDIO = $$($(PY) -c "from harness.paths import sample_audio; print(sample_audio()[0])") \
	tests/data/speakrs/test.wav tests/data/speakrs/test_short.wav

demo: install
	$(PY) -m harness compare --dtype all --quantize 8 --embedding-mode sparse --check --audio $(DEMO_AUDIO)

test: install
	$(PY) -m pytest -q

doctor: install
	$(PY) -m mlx_diar doctor

clean:
	rm -rf $(VENV) reports/*/
