VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install demo test doctor clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh

demo: install
	$(PY) -m harness compare --dtype all

test: install
	$(PY) -m pytest -q

doctor: install
	$(PY) -m mlx_diar doctor

clean:
	rm -rf $(VENV) reports/*/
