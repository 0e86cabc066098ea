# diluvian: `make demo` and `make test` do all the set-up they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: setup
	$(PY) -m diluvian.demo $(DEMO_DIR)

test: setup
	@# pytest exits 5 when it collects no test: an empty run is a failure, not a pass
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'make test: no tests were collected' >&2; exit 1; fi; exit $$rc

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info src/*.egg-info
