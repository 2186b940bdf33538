PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q -e ".[test,cluster,track]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	.venv/bin/transferlab compare --out demo_out
	@echo "Report written to demo_out/report.html (and demo_out/report.md, results.csv, results.json)"

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf .venv demo_out
