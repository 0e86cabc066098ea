# diluvian: `make demo` and `make test` do all the set-up they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: setup demo test test-deps bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: setup
	DILUVIAN=$(VENV)/bin/diluvian scripts/demo.sh $(DEMO_DIR)

# Chromium and its driver for the `browser` tests (driven by selenium, from the `test` extra):
# installed when missing and possible (root + apt-get). Never fails: without them those tests skip.
test-deps:
	@{ command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } && \
	command -v chromedriver >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  echo 'make test-deps: installing chromium and chromium-driver for the browser tests' >&2 && \
	  timeout 300 apt-get update -qq >/dev/null 2>&1 && \
	  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; } || \
	echo 'make test-deps: no chromium/chromedriver; the browser tests will skip' >&2

test: setup test-deps
	@# imports run one way (the layer order of docs/DESIGN.md): fails on an upward import or a circle
	$(PY) scripts/check_imports.py -q
	@# pytest exits 5 when it collects no test: an empty run is a failure, not a pass
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'make test: no tests were collected' >&2; exit 1; fi; exit $$rc

bench: setup
	$(PY) benchmarks/evaluate.py --skip-large
	$(PY) benchmarks/fill_throughput.py
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info src/*.egg-info
