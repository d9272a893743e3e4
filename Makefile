# Two commands on a fresh machine:
#   make run   - creates .venv, installs, runs the whole pipeline on the embedded default
#   make test  - creates .venv if needed, installs, runs the tests
# and one to operate it as a service:
#   make serve - Prefect server + MLflow server + the scheduled deployment; Ctrl-C stops them
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export PATH := $(CURDIR)/$(BIN):$(PATH)
export PREFECT_HOME := $(CURDIR)/.reverie/prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: run test install repro report serve mlflow-ui clean

install: $(STAMP)

# torch is pinned to the CPU build this machine keeps on disk (see pyproject.toml).
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || python3 -m venv $(VENV)
	@echo "installing into $(VENV) (log: $(VENV)/pip.log)"
	@$(BIN)/pip install --disable-pip-version-check -e '.[test,scale]' > $(VENV)/pip.log 2>&1 \
		|| (grep -v 'is ignored' $(VENV)/pip.log | tail -40; exit 1)
	@touch $@

run: $(STAMP)
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/python -m flows.pipeline

repro: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/python -m pytest -q

# ports, host and cron come from params.yaml (orchestration); e.g. make serve SERVE_ARGS='--prefect-port 4610'
serve: $(STAMP)
	$(BIN)/python -m reverie.services $(SERVE_ARGS)

# the MLflow UI alone, on the store params name (project.mlflow_tracking_uri; MLFLOW_TRACKING_URI wins)
mlflow-ui: $(STAMP)
	$(BIN)/python -m reverie.services mlflow $(SERVE_ARGS)

clean:
	rm -rf data models predictions plots metrics reports mlflow.db mlruns mlartifacts .reverie
