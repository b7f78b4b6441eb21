# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv and install the pinned dependencies first (idempotent).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
# a smoke run of train -> evaluate; the tuned demo budget comes with the demo spec's tuning
DEMO_EPOCHS ?= 1

.PHONY: install demo test lint format clean

install: $(STAMP)

# torch==2.13.0 is installed on its own first so that nothing resolves an unpinned torch
# to the CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	$(BIN)/bpnet dataset synth --out $(DEMO_DIR)/data --train 200 --val 50 --seed 0 --force
	$(BIN)/bpnet dataset stats -d $(DEMO_DIR)/data --split train
	$(BIN)/bpnet dataset stats -d $(DEMO_DIR)/data --split val
	$(BIN)/bpnet dataset show -d $(DEMO_DIR)/data --split val --out $(DEMO_DIR)/show -n 4
	$(BIN)/bpnet bench data -d $(DEMO_DIR)/data --split train -e specs/synthetic_demo.yaml --samples 64
	$(BIN)/bpnet evaluate --oracle -d $(DEMO_DIR)/data --split val -r $(DEMO_DIR)/oracle
	$(BIN)/bpnet bench decode --frames 5
	$(BIN)/bpnet train -e specs/synthetic_demo.yaml -r $(DEMO_DIR)/train -d $(DEMO_DIR)/data -o num_epoch=$(DEMO_EPOCHS)
	$(BIN)/bpnet evaluate -m $(DEMO_DIR)/train/model_epoch_$(shell printf %03d $(DEMO_EPOCHS)).pth -d $(DEMO_DIR)/data --split val -r $(DEMO_DIR)/eval -i specs/infer_spec_strict.yaml -o 'input_shape=[256,256]'

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
