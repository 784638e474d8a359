# flask-notify-emergency: each target creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: demo test typecheck bench bench-quick chaos chaos-quick vendor axe messages translations wheel clean
AXE := node_modules/axe-core/axe.min.js
CATALOG := flask_notify_emergency/translations
PYBABEL := $(VENV)/bin/pybabel

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed  ## run the example app on http://127.0.0.1:5000
	cd examples && ../$(PY) app.py

test: $(VENV)/.installed $(AXE)  ## run the test suite
	$(PY) -m pytest $(PYTEST_ARGS)

typecheck: $(VENV)/.installed  ## mypy over the package (settings in setup.cfg)
	$(PY) -m mypy flask_notify_emergency

bench: $(VENV)/.installed  ## full benchmarks; the last line printed is one JSON object
	$(PY) bench/run.py

bench-quick: $(VENV)/.installed
	$(PY) bench/run.py --quick

chaos: $(VENV)/.installed  ## the chaos and load suite (tens of minutes); the last line is one JSON object
	$(PY) -m bench.chaos.run $(CHAOS_ARGS)

chaos-quick: $(VENV)/.installed  ## the short chaos suite: five runs and the throughput pair
	$(PY) -m bench.chaos.run --quick $(CHAOS_ARGS)

vendor:  ## refresh static/vendor from the npm registry
	npm install --no-audit --no-fund
	cp node_modules/socket.io-client/dist/socket.io.min.js static/vendor/

axe: $(AXE)  ## axe-core for the accessibility tests (test-only: never in static/ or the wheel)
$(AXE): package.json
	npm install --no-audit --no-fund
	touch $@

messages: $(VENV)/.installed  ## refresh the catalogue (.pot) and merge it into every translation (.po)
	$(PYBABEL) extract -F babel.cfg -k N_ -k lazy_gettext --no-location --sort-output \
		--project flask-notify-emergency --msgid-bugs-address "" -o $(CATALOG)/flask_notify_emergency.pot .
	$(PYBABEL) update -D flask_notify_emergency -i $(CATALOG)/flask_notify_emergency.pot -d $(CATALOG) --no-fuzzy-matching

translations: $(VENV)/.installed  ## compile every translation (.po -> .mo, shipped in the wheel)
	$(PYBABEL) compile -D flask_notify_emergency -d $(CATALOG) --statistics

wheel: $(VENV)/.installed
	$(PY) -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) build dist *.egg-info node_modules
