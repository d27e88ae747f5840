# Two commands do all the set-up: `make run` (install + dashboard) and `make test` (install + suite).
PY ?= python3

.PHONY: install run test test-deps bench

install:
	$(PY) -m pip install -q -r requirements.txt

run: install
	$(PY) -m streamlit run dashboard/app.py

test-deps:
	$(PY) -m pip install -q -r requirements-dev.txt
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: test-deps
	$(PY) -m pytest -q

bench: install
	$(PY) bench/bench_data.py
