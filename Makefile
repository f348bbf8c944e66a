# gtforge: `make demo` builds a small dataset from the sample photos; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
SAMPLE := data/sample

.PHONY: demo test install sample lint clean luigid luigid-stop quality

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

# Two workers with one torch thread each: the tiny networks run side by side on two cores.
demo: sample
	$(VENV)/bin/gtforge build --local-scheduler --workers 2 --threads 1 --input-dir $(SAMPLE)

# The quality benchmark (docs/QUALITY.md): clean references, imperfect GTs, a build and its
# measurement against the truth; about 25 minutes on 2 cores.
quality: $(INSTALLED)
	$(PY) -m bench.bench_quality --dir data/quality

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
