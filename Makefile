# flask-notify-emergency: each target creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: demo test typecheck bench bench-quick chaos chaos-quick vendor wheel clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed  ## run the example app on http://127.0.0.1:5000
	cd examples && ../$(PY) app.py

test: $(VENV)/.installed  ## run the test suite
	$(PY) -m pytest $(PYTEST_ARGS)

typecheck: $(VENV)/.installed  ## mypy over the package (settings in setup.cfg)
	$(PY) -m mypy flask_notify_emergency

bench: $(VENV)/.installed  ## full benchmarks; the last line printed is one JSON object
	$(PY) bench/run.py

bench-quick: $(VENV)/.installed
	$(PY) bench/run.py --quick

chaos: $(VENV)/.installed  ## the chaos and load suite (tens of minutes); the last line is one JSON object
	$(PY) -m bench.chaos.run $(CHAOS_ARGS)

chaos-quick: $(VENV)/.installed  ## the short chaos suite (CI): five runs and the throughput pair
	$(PY) -m bench.chaos.run --quick $(CHAOS_ARGS)

vendor:  ## refresh static/vendor from the npm registry
	npm install --no-audit --no-fund
	cp node_modules/socket.io-client/dist/socket.io.min.js static/vendor/

wheel: $(VENV)/.installed
	$(PY) -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) build dist *.egg-info node_modules
