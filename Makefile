# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv and install the pinned dependencies first (idempotent).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
# training minutes of `bpnet demo` (empty: its default, which keeps `make demo` within 20 minutes
# on 2 cores); the other steps do not scale with it. A rerun continues an interrupted run.
DEMO_BUDGET ?=

PRETRAINED := runs/pretrained/tfpose_mobilenet_v2_small.pth

.PHONY: install demo test lint format clean pretrained

install: $(STAMP)

# torch==2.13.0 is installed on its own first so that nothing resolves an unpinned torch
# to the CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# the vendored COCO-trained tf-pose network as a bpnet checkpoint (docs/IMPORT.md)
pretrained: $(PRETRAINED)

$(PRETRAINED): pretrained/tfpose_mobilenet_v2_small/graph_opt.pb $(STAMP)
	mkdir -p $(dir $@)
	$(BIN)/bpnet import --from tfpose $< -o $@ --force

# the whole workflow: synthetic data -> fine-tune -> evaluate -> prune -> retrain -> INT8 ->
# evaluate -> real photos -> speed against OpenPose -> pictures -> $(DEMO_DIR)/report.md
demo: install $(PRETRAINED)
	$(BIN)/bpnet demo -r $(DEMO_DIR) $(if $(DEMO_BUDGET),--budget $(DEMO_BUDGET))

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -n 2

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
