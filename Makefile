# make run  : set up .venv if needed and open the app (http://127.0.0.1:8501)
# make test : set up .venv if needed and run the test suite
# make lint : set up .venv if needed and run ruff (rules in pyproject.toml)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-$(shell cat requirements.txt requirements-nodeps.txt | sha1sum | cut -c1-12)

.PHONY: setup run test lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@# make `import explorer` work from any script run with the venv's python (benchmarks, CLI)
	$(PY) -c "import pathlib, site; pathlib.Path(site.getsitepackages()[0], 'machine_imagination.pth').write_text('$(CURDIR)\n')"
	@rm -f $(VENV)/.requirements-*
	@touch $(STAMP)

run: setup
	$(VENV)/bin/streamlit run streamlit_app.py

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) benchmarks/vs_lucent.py

clean:
	rm -rf $(VENV) .pytest_cache
