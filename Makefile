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

# The default test run includes the slow end-to-end tests (CI runs exactly this).
# One process on purpose: pytest-xdist's two workers were no faster on 2 cores (JAX and
# TensorFlow already use both), and the end-to-end tests bound how long programs may take.
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS) tests

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
