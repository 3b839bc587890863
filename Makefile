# The README's two commands are `make run` and `make test`; each sets up the environment first
# (infra/bootstrap.sh: a venv keyed by requirements.lock's hash, created once, reused after).
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c
export PYTHONPATH := $(CURDIR)
export PYTHONDONTWRITEBYTECODE := 1
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST_ARGS ?=
ARGS ?=

.PHONY: run tune test compile lint bench summary show env serve kserve stack ui

env:
	@infra/bootstrap.sh

run:  ## set up if needed, get MNIST, run the whole pipeline locally, print the decision
	venv=$$(infra/bootstrap.sh)
	"$$venv/bin/python" -m pipelines run $(ARGS)

# Tuning's budget per framework: TUNE_TRIALS x TUNE_EPOCHS x TUNE_EXAMPLES training examples.
TUNE_TRIALS ?= 12
TUNE_EPOCHS ?= 1
TUNE_EXAMPLES ?= 20000

tune:  ## run the pipeline with both frameworks tuned first, the same budget each (TUNE_TRIALS=12 TUNE_EPOCHS=1 TUNE_EXAMPLES=20000; ARGS="--tune-workers 2")
	venv=$$(infra/bootstrap.sh)
	"$$venv/bin/python" -m pipelines run --tune-trials $(TUNE_TRIALS) --tune-epochs $(TUNE_EPOCHS) \
		--tune-examples $(TUNE_EXAMPLES) $(ARGS)

test:  ## lint, then the whole test suite (real TFX, Beam, TF, PyTorch, MLflow, KFP compile)
	# On a fresh machine the three installs overlap: Debian's packages beside the venv, and the
	# serving venv (needed by the serving tests, late in the run) beside the tests themselves.
	logs=$${TMPDIR:-/tmp}/mnist-test-setup; mkdir -p "$$logs"
	infra/test_deps.sh > "$$logs/test_deps.log" 2>&1 & deps=$$!
	venv=$$(infra/bootstrap.sh)
	serving/bootstrap.sh > "$$logs/serving_bootstrap.log" 2>&1 & serving=$$!
	trap 'kill $$serving 2>/dev/null || true' EXIT
	wait $$deps || { cat "$$logs/test_deps.log"; exit 1; }
	"$$venv/bin/ruff" check .
	"$$venv/bin/python" -m pytest $(PYTEST_ARGS)

compile:  ## regenerate pipeline.yaml (KFP v2 IR) from the code
	venv=$$(infra/bootstrap.sh)
	"$$venv/bin/python" -m pipelines compile $(ARGS)

summary:  ## the latest local run's decision, accuracies and output locations
	venv=$$(infra/bootstrap.sh)
	"$$venv/bin/python" -m pipelines summary $(ARGS)

lint:
	venv=$$(infra/bootstrap.sh)
	"$$venv/bin/ruff" check .

show:  ## the latest run's comparison table, paired tests and decision (ARGS="--run ID" for another)
	venv=$$(infra/bootstrap.sh)
	"$$venv/bin/python" -m pipelines show $(ARGS)

ui:  ## the MLflow UI (trainings, evaluation, registered version) and TensorBoard on the latest run, until Ctrl-C
	venv=$$(infra/bootstrap.sh)
	"$$venv/bin/python" -m pipelines ui $(ARGS)

serve:  ## serve the registry's champion with MLServer on 127.0.0.1 (REST 8080, gRPC 8081) until Ctrl-C
	venv=$$(infra/bootstrap.sh)
	"$$venv/bin/python" -m pipelines serve $(ARGS)

kserve:  ## print a KServe InferenceService for the champion (ARGS="--kserve-canary-traffic-percent 10 -o isvc.yaml")
	venv=$$(infra/bootstrap.sh)
	"$$venv/bin/python" -m pipelines kserve $(ARGS)

stack:  ## the deployed form here: images, SeaweedFS (S3), PostgreSQL, MLflow server; every task of pipeline.yaml in a container (ARGS="--subset")
	venv=$$(infra/bootstrap.sh)
	"$$venv/bin/python" -m infra.stack $(ARGS)
