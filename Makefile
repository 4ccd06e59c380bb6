# Everything a fresh machine needs: `make demo` (run on seeds/), `make test` (the test suite),
# `make bench` (the throughput benchmark).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: install demo test test-fast bench bench-targets clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the local CPU build of torch first, so that nothing resolves a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,gcp,bench]'
	touch $@

install: $(BIN)/.installed

demo: install
	rm -rf out/seeds
	$(BIN)/python -m pipeline run --input seeds/ --output out/seeds
	$(BIN)/python -m pipeline query --output out/seeds \
	  "SELECT speaker, q.kind, s.label AS stance, round(s.escalation_score, 2) AS score, left(q.text, 60) AS quote FROM quotes q JOIN stances s USING (quote_id) ORDER BY q.start_char"

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# The throughput benchmark (bench/README.md): make bench CORPUS=../shared/data/polnear/train/text ARTICLES=100
CORPUS ?= ../shared/data/polnear/train/text
ARTICLES ?= 100
bench: install
	$(BIN)/python -m bench --corpus $(CORPUS) --articles $(ARTICLES) --baseline

# Every target of the issue "Fast" on this machine, the logs in out/bench-targets (bench/README.md
# "Where they stand"): make bench-targets SHARED=../shared/data
SHARED ?= ../shared/data
bench-targets: install
	$(BIN)/python -m bench.targets --corpus $(CORPUS) --conll $(SHARED)/conll2003/eng.testa \
	  --stance-tsv $(SHARED)/cameo_class/train.tsv --stance-tsv data/quote_stance.tsv

clean:
	rm -rf out $(VENV) *.egg-info
