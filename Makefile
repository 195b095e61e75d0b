# Two commands do all the set-up on a fresh clone (Python 3.10+; 3.11 tested):
#   make demo   installs into .venv, then pre-trains BERT-tiny on the Wikipedia sample
#   make test   installs into .venv, then runs the test suite (what CI runs)
PYTHON ?= python3
# Test processes (pytest-xdist); each one also gets 8 fake CPU devices.
TEST_WORKERS ?= 2
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install

install: $(STAMP)

$(STAMP): setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m bert_jax.main --config=configs/pretrain.py:size=tiny,demo --workdir=runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist=worksteal tests

lint: $(STAMP)
	$(BIN)/ruff format --check . && $(BIN)/ruff check .
