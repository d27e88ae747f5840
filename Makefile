# Two commands do all the set-up: `make run` (install + dashboard) and `make test` (install + suite).
PY ?= python3

.PHONY: install run test test-deps chromium bench

install:
	$(PY) -m pip install -q -r requirements.txt

run: install
	$(PY) -m streamlit run dashboard/app.py

# Browser tests drive Debian's chromium; install it when missing (needs root, as in CI).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); \
	  else echo "note: /usr/bin/chromium missing and not root: browser tests will be skipped"; fi; \
	fi

test-deps: chromium
	$(PY) -m pip install -q -r requirements-dev.txt

test: test-deps
	$(PY) -m pytest -q --durations=15

bench: install
	$(PY) bench/bench_data.py
	$(PY) bench/bench_predict.py
	$(PY) bench/bench_training.py --quick
