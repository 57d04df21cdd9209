# Fresh-machine set-up: `make demo` and `make test` create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DATA ?= ../shared/data/300W

.PHONY: install demo test bench-loader clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/facealign demo --data $(DATA)

test: $(STAMP)
	$(PY) -m pytest -q tests

bench-loader: $(STAMP)
	$(PY) benchmarks/loader_vs_model.py --data $(DATA)

clean:
	rm -rf runs results .pytest_cache
