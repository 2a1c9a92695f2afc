# `make install` builds .venv; `make test` runs lint + tests; `make quickstart` runs the main job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# tcmalloc roughly doubles small-model training speed on CPU; used when the system has it.
TCMALLOC := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4))
RUN := $(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC)) $(BIN)

.PHONY: install test lint quickstart clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

lint: install
	$(BIN)/ruff check muppets tests bench
	$(BIN)/ruff format --check muppets tests bench

test: lint
	$(RUN)/python -m pytest -q

quickstart: install
	$(RUN)/muppets quickstart

clean:
	rm -rf $(VENV) runs build *.egg-info
