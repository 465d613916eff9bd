# Two commands on a fresh machine with only Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test report bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m experiments.train $(ARGS)

test: setup
	$(PY) -m pytest -n 2 --dist loadfile -q $(ARGS)

# The report of `make run`'s run (RUN=DIR for another run, ARGS for more flags): writes
# RUN/report.html and prints its path.
RUN ?= runs/han_upa
report: setup
	$(PY) -m experiments.report --workdir=$(RUN) $(ARGS)

bench: setup
	$(PY) tools/bench.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
