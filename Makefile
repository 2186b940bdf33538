PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed
# The real data sets (docs/data.md): $TRANSFERLAB_DATA when set, else ../shared/data where the checkout sits beside it.
ifneq ($(wildcard ../shared/data/.),)
TRANSFERLAB_DATA ?= $(abspath ../shared/data)
export TRANSFERLAB_DATA
endif

.PHONY: demo test test-all install clean

$(STAMP): pyproject.toml requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q -e ".[test,cluster,track,docs,export]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	.venv/bin/transferlab compare --out demo_out
	@echo "Report written to demo_out/report.html (and demo_out/report.md, results.csv, results.json)"

# Two processes (pytest-xdist), one torch thread each, whole files per process (a file's fixtures are built once).
TEST_JOBS ?= 2
PYTEST := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile

test: $(STAMP)
	$(PYTEST) -m "not slow"

test-all: $(STAMP)
	$(PYTEST)

clean:
	rm -rf .venv demo_out
