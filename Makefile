# Thin wrappers over the `charlm` command. `make test` and `make demo` set everything up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PLUGINS := $(wildcard plugins/*/pyproject.toml)

CONFIG ?= configs/micro.toml
CHECKPOINT ?= runs/micro/checkpoints/last.pt
DATA ?= data/shakespeare/val.bin
PROMPT ?= ROMEO.
FORMAT ?= int8
EXPORT_OUT ?= runs/micro/micro.$(FORMAT)

.PHONY: setup test demo data-pull train eval sample export bench clean

$(STAMP): pyproject.toml $(PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	for p in $(dir $(PLUGINS)); do $(BIN)/pip install -q -e "$$p[test]" || exit 1; done
	touch $@

setup: $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

data/shakespeare/train.bin: | setup
	$(BIN)/charlm data pull shakespeare --out data/shakespeare --val-docs 0,10,20,30,40

data-pull: data/shakespeare/train.bin

train: setup
	$(BIN)/charlm run $(CONFIG)

eval: setup
	$(BIN)/charlm eval --checkpoint $(CHECKPOINT) --data $(DATA)

sample: setup
	$(BIN)/charlm generate --checkpoint $(CHECKPOINT) --prompt "$(PROMPT)" --max-new 256

export: setup
	$(BIN)/charlm export --format $(FORMAT) --checkpoint $(CHECKPOINT) --out $(EXPORT_OUT)

bench: setup
	$(BIN)/python bench/run_all.py

# The main job end to end: data, the micro model (a DEMO_TIME budget, shorter than the
# 5-minute recipe), its bits/byte on the held-out texts, and a sample. Re-running resumes.
DEMO_TIME ?= 2m
DEMO_DIR ?= runs/demo

demo: setup data/shakespeare/train.bin
	$(BIN)/charlm run configs/micro.toml max_time=\"$(DEMO_TIME)\" out_dir=\"$(DEMO_DIR)\" --resume auto
	$(BIN)/charlm eval --checkpoint $(DEMO_DIR)/checkpoints/last.pt --data data/shakespeare/val.bin --stride 128
	$(BIN)/charlm generate --checkpoint $(DEMO_DIR)/checkpoints/last.pt --prompt "$(PROMPT)" --max-new 300 --temperature 0.8 --seed 0

clean:
	rm -rf $(VENV) runs data
