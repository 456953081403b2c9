# prodcat developer targets. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: help install test test-all lint demo bench serve clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install:  ## create .venv and install prodcat with dev tools (torch CPU wheel pinned)
	python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0 -e '.[dev]'

test:  ## fast test suite (what CI runs)
	$(VENV)/bin/pytest

test-all:  ## every test, slow ones included
	$(VENV)/bin/pytest -m ''

lint:  ## ruff + mypy
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

demo:  ## synthetic catalog, end to end
	$(VENV)/bin/prodcat demo --out demo-output

bench:  ## all benchmarks on ../shared/data (long; about 2 h on 2 cores); results in bench-output/
	$(PY) benchmarks/bench_fusion.py --json bench-output/fusion.json
	$(PY) benchmarks/bench_text.py --fresh --json bench-output/text.json
	$(PY) benchmarks/bench_text_long.py --json bench-output/text-long.json
	$(PY) benchmarks/bench_head_threads.py --fashion --json bench-output/head-threads.json
	$(PY) benchmarks/bench_train_text.py --cache-dir bench-output/train-text-cache --fresh --predictions --json bench-output/train-text-cold.json
	$(PY) benchmarks/bench_train_text.py --cache-dir bench-output/train-text-cache --drop arrays --pair-with bench-output/train-text-cold.json --json bench-output/train-text-warm.json
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_fusion_rows.py --cache-dir bench-output/train-text-cache --json bench-output/fusion-rows.json
	$(PY) benchmarks/bench_image.py
	nice -n 5 $(PY) benchmarks/bench_image_top.py --frozen-cold-only --threads 1 --json bench-output/image-top.json
	$(PY) benchmarks/bench_noise.py synthetic
	$(PY) benchmarks/bench_noise.py rakuten
	$(PY) benchmarks/bench_noise.py fashion-audit
	$(PY) benchmarks/bench_noise.py fashion-prune
	$(PY) benchmarks/bench_gbdt_predict.py
	$(PY) benchmarks/bench_pipeline.py --json bench-output/pipeline.json
	$(PY) benchmarks/bench_startup.py --model bench-output/pipeline/model-full --json bench-output/startup.json
	$(PY) benchmarks/bench_predict_call.py --model bench-output/pipeline/model-full --json bench-output/predict-call.json
	$(PY) benchmarks/bench_bundle_load.py bench-output/pipeline/model-full > bench-output/bundle_load.json
	$(PY) benchmarks/bench_trust.py --rakuten --fashion --json bench-output/trust.json
	$(PY) benchmarks/bench_report.py --out bench-output/report331 --json bench-output/report331.json
	$(PY) benchmarks/bench_serve.py --model $(or $(MODEL),bench-output/pipeline/model-full) --json bench-output/serve.json
	$(PY) benchmarks/bench_classes.py --sizes 55,1000,331 --keep-in bench-output/classes-work --jsonl bench-output/classes.jsonl
	$(PY) benchmarks/bench_classes.py --no-warm --sizes 55,3000 --min-rows 5 --repeat 2 --folds 3000:3 --keep-in bench-output/classes-predict --jsonl bench-output/classes.jsonl
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_class_predict.py bench-output/classes-predict/55/bundle bench-output/classes-predict/3000/bundle --json bench-output/class-predict.json
	$(PY) benchmarks/bench_class_fusion.py bench-output/classes-work/331 --jsonl bench-output/class_fusion.jsonl
	$(PY) benchmarks/bench_class_memory.py --rows 10000 --classes 1000 --folds 3 > bench-output/class_memory.txt
	$(PY) benchmarks/bench_heads.py --json bench-output/heads.json
	$(PY) benchmarks/bench_scale.py --model $(or $(MODEL),bench-output/pipeline/model-full) --variant text --rows 10000 100000 1000000 --json bench-output/scale.jsonl -- --cache-dir auto
	$(PY) benchmarks/bench_review.py --json bench-output/review.json
	$(PY) benchmarks/bench_cache.py
	$(PY) benchmarks/bench_fuser_batch.py $(or $(MODEL),bench-output/pipeline/model-full)

serve:  ## serve a trained model: make serve MODEL=path/to/model
	$(VENV)/bin/prodcat serve $(MODEL)

clean:  ## remove build and demo outputs
	rm -rf build dist *.egg-info demo-output .pytest_cache .mypy_cache .ruff_cache
