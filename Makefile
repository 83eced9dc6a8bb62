# Three commands: `make run` (local multi-process experiment), `make test` and `make lint`.
# Each creates .venv with Python 3.10 and the verified dependency set when it is missing.

VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
RUN_ARGS   ?=
PYTEST_ARGS ?=

.PHONY: run test test-fast test-slow lint format venv clean-venv

venv: $(STAMP)

$(STAMP): setup.py constraints.txt
	@set -e; \
	py=""; \
	for cand in "$${PYTHON310:-}" "$$(command -v python3.10 2>/dev/null)" \
	            $$(ls -d $$HOME/.pyenv/versions/3.10.*/bin/python 2>/dev/null | sort -V -r) \
	            /usr/bin/python3.10 /usr/local/bin/python3.10; do \
	  [ -n "$$cand" ] && [ -x "$$cand" ] || continue; \
	  if "$$cand" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; then py="$$cand"; break; fi; \
	done; \
	if [ -z "$$py" ]; then \
	  echo "error: Python 3.10 with the venv module is required (Launchpad ships wheels for CPython <= 3.10 only)." >&2; \
	  echo "       None was found on PATH (python3.10), under ~/.pyenv/versions/3.10.*, or in PYTHON310." >&2; \
	  echo "       Install CPython 3.10 (e.g. 'pyenv install 3.10' or your OS package python3.10-venv) and retry." >&2; \
	  exit 1; \
	fi; \
	echo "[setup] using $$py ($$("$$py" --version 2>&1))"; \
	rm -rf $(VENV); \
	"$$py" -m venv $(VENV); \
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt uv; \
	if ! $(VENV)/bin/uv pip install -q --python $(PY) -c constraints.txt \
	       -C editable_mode=compat -e '.[test,lint]'; then \
	  echo "[setup] uv could not install the set; trying pip (slower)" >&2; \
	  $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,lint]'; \
	fi; \
	$(PY) -m launch.loopback >/dev/null || \
	  echo "[setup] the servers' loopback bind shim is not built; launches will say so" >&2; \
	touch $(STAMP); \
	echo "[setup] environment ready in $(VENV)"

run: $(STAMP)
	$(PY) -m experiments.collect_infer $(RUN_ARGS)

# The default test run includes the slow end-to-end tests (CI runs exactly this), in two
# passes. The tests that are not marked slow run on TEST_WORKERS pytest-xdist workers, a
# test file to a worker (module fixtures, such as a launched program, start once): they are
# mostly single-threaded compilation, and two workers on 2 cores took 0.6x the time of one.
# The slow end-to-end tests then run in one process: they launch programs of 5-7 processes
# each and bound how long those may take. Either pass failing fails; a pass that selects no
# test (PYTEST_ARGS picking tests of the other kind) is fine if the other ran some.
TEST_WORKERS ?= 2

test: $(STAMP)
	@fast=0; $(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests || fast=$$?; \
	slow=0; $(PY) -m pytest -q -m slow $(PYTEST_ARGS) tests || slow=$$?; \
	echo "[test] tests not marked slow: pytest exit $$fast; slow end-to-end tests: pytest exit $$slow"; \
	if [ $$fast -eq 5 ] && [ $$slow -eq 5 ]; then echo "[test] no test was selected" >&2; exit 5; fi; \
	for rc in $$fast $$slow; do if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then exit $$rc; fi; done

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS) tests

# The format check and the linter (configured in ruff.toml); both run, either failing fails.
lint: $(STAMP)
	@rc=0; \
	$(VENV)/bin/ruff format --check . || rc=1; \
	$(VENV)/bin/ruff check . || rc=1; \
	exit $$rc

# Rewrites the tree in the house style and applies the linter's safe fixes.
format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
