# gtforge: `make demo` builds a small dataset from the sample photos; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
SAMPLE := data/sample

.PHONY: demo test install sample lint clean luigid luigid-stop

install: $(INSTALLED)

# torch/torchvision come from this machine's local wheel store; basicsr-fixed (NIQE's pristine
# parameters, and the BasicSR adapter tests) builds against the installed torch, hence no isolation.
$(INSTALLED): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-build-isolation basicsr-fixed
	touch $@

sample: $(INSTALLED)
	$(VENV)/bin/gtforge sample $(SAMPLE)

demo: sample
	$(VENV)/bin/gtforge build --local-scheduler --input-dir $(SAMPLE)

test: $(INSTALLED)
	$(VENV)/bin/ruff check pipeline tasks models tests bench examples
	$(PY) -m pytest -q --timeout 900

luigid: $(INSTALLED)
	$(VENV)/bin/gtforge scheduler start

luigid-stop: $(INSTALLED)
	$(VENV)/bin/gtforge scheduler stop

lint: $(INSTALLED)
	$(VENV)/bin/ruff check pipeline tasks models tests bench examples

clean:
	rm -rf data/work data/out
