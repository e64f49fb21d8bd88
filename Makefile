# cloudtrain.ec2: the two commands of the README, and their parts.
#   make demo   the whole pipeline on this machine, no AWS account (the local stand-in plays AWS)
#   make test   lint, sanity, unit/integration tests and the Molecule scenarios
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(BIN):$(PATH)
export PYTHONUNBUFFERED := 1

# Molecule scenarios under extensions/molecule/, in the order CI runs them.
MOLECULE_SCENARIOS ?= provision docker train default

.PHONY: demo test venv host lint sanity pytest molecule bench stop clean changelog

# Extra ansible-playbook arguments: make demo ARGS="-e epochs=3 -v"
demo: venv host
	tests/standin/demo.sh $(ARGS)

test: lint sanity pytest molecule

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-train.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

# Docker engine, registry binary, debootstrap; starts dockerd if none answers (root).
host:
	scripts/host-setup.sh

lint: venv
	$(BIN)/ansible-lint --profile production
	$(BIN)/antsibull-changelog lint

# CHANGELOG.rst from changelogs/fragments/ (kept: a later fragment joins the same release).
changelog: venv
	$(BIN)/antsibull-changelog release --update-existing

sanity: venv
	scripts/sanity.sh

# --durations: CI's log shows where its 60-minute budget goes.
pytest: venv host
	$(BIN)/pytest --durations=20 tests

molecule: venv host
	for scenario in $(MOLECULE_SCENARIOS); do $(BIN)/molecule test -s $$scenario; done

bench: venv host
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/provision_speed.py
	$(BIN)/python bench/demo_phases.py
	$(BIN)/python bench/fetch_speed.py

# Stop what the demo and the tests left running (stand-in registries and instances, the AWS
# emulator); the built images and caches stay for the next run.
stop:
	-$(BIN)/python tests/standin/standin.py down
	-$(BIN)/python tests/standin/emulator.py stop

clean: stop
	rm -rf .cache artifacts
