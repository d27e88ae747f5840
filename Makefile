# Two commands do all the set-up: `make run` (install + dashboard) and `make test` (install + suite).
PY ?= python3

.PHONY: install run serve test test-deps chromium nginx bench

install:
	$(PY) -m pip install -q -r requirements.txt

run: install
	$(PY) -m streamlit run dashboard/app.py

# A classroom: WORKERS dashboard processes behind Debian's nginx (sticky sessions, one run store,
# crashed processes restarted; deploy/serve.py). SERVE_ADDRESS=0.0.0.0 lets the class in.
WORKERS ?= 2
SERVE_ADDRESS ?= 127.0.0.1
SERVE_PORT ?= 8501
serve: install nginx
	$(PY) deploy/serve.py --workers $(WORKERS) --address $(SERVE_ADDRESS) --port $(SERVE_PORT)

# Browser tests drive Debian's chromium; install it when missing (needs root, as in CI).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); \
	  else echo "note: /usr/bin/chromium missing and not root: browser tests will be skipped"; fi; \
	fi

# `make serve` and its tests run Debian's nginx (as their own foreground process, nothing under
# /var); install it when missing, as chromium above.
nginx:
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null); \
	  else echo "note: nginx missing and not root: \`make serve\` needs it, its tests will be skipped"; fi; \
	fi

test-deps: chromium nginx
	$(PY) -m pip install -q -r requirements-dev.txt

# Lint first (ruff, configured in pyproject.toml): a finding fails the run before any test.
test: test-deps
	$(PY) -m ruff check .
	$(PY) -m pytest -q --durations=15

bench: install
	$(PY) bench/bench_data.py
	$(PY) bench/bench_predict.py
	$(PY) bench/bench_training.py --quick
