# Two set-up commands for a new machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/pip
# torch is pinned (the release the tests were run with); it is a CPU build only where pip finds a local CPU wheel,
# elsewhere on Linux x86-64 PyPI's build brings CUDA: see the README for PyTorch's CPU index.
TORCH  ?= torch==2.13.0

.PHONY: demo test install-lint install-all oracle clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install-lint: $(VENV)/bin/python
	$(PIP) install -q -e .

install-all: $(VENV)/bin/python
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[convert,verify,test]'

demo: install-lint
	-$(VENV)/bin/nemo-migrate lint fixtures/examples/
	$(VENV)/bin/migrate-config fixtures/examples/gpt_clean.yaml --emit-python

test: install-all
	$(VENV)/bin/python -m pytest -q

# Real NeMo 2.0 (2.3.2, CPU, its own venv under ~/.cache) loads what `convert` writes: see .ci/oracle.
oracle: install-all
	.ci/oracle

clean:
	rm -rf $(VENV) build dist *.egg-info
