# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.skewless-installed
DATASET ?= taxi
CONFIG ?= configs/$(DATASET).yaml
MODEL_NAME ?= $(DATASET)
ROWS ?= data/$(DATASET)/rows.json
MODEL_BASE_PATH ?= artifacts/serving/$(MODEL_NAME)
PYTEST_ARGS ?=

.PHONY: demo test lint install clean-artifacts

install: $(STAMP)

# scripts/install.sh is also the pipeline image's install step (kubeflow/Dockerfile).
$(STAMP): setup.py constraints.txt scripts/install.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	sh scripts/install.sh $(BIN)/python -e ".[dev]"
	touch $@

# Train, evaluate and push on the bundled data, then serve the pushed model and query it once
# over REST and once over gRPC. `make demo DATASET=iris` (multiclass) or `DATASET=diabetes`
# (regression) for the other bundled tasks.
demo: $(STAMP)
	$(BIN)/skewless run --config $(CONFIG)
	$(BIN)/skewless serve-demo --model_base_path $(MODEL_BASE_PATH) --model_name $(MODEL_NAME) \
		--json $(ROWS)

# Two workers (the CI machine has 2 cores); each test file runs whole on one worker, so the
# pipeline runs a file shares are made once.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean-artifacts:
	rm -rf artifacts
