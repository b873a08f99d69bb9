# pacsnode: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACSNODE_HOME ?= pacsnode-data
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: run test venv dcmtk orthanc peers fonts bench bench-quick samples clean

# The venv is rebuilt when pyproject.toml changes.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

# Real DICOM peers for the interop tests: DCMTK's command-line tools and Orthanc. DCMTK is looked for in
# /usr/bin, not on PATH: an activated venv has pynetdicom's own storescu/findscu/echoscu first.
dcmtk:
	@test -x /usr/bin/storescu || { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq dcmtk; }
	@command -v openssl >/dev/null 2>&1 || { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq openssl; }

orthanc:
	@command -v Orthanc >/dev/null 2>&1 || test -x /usr/sbin/Orthanc || { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq orthanc; }

peers: dcmtk orthanc

# A font with Chinese glyphs for `qc preview` labels (series descriptions are often Chinese), found
# through fontconfig; without one the labels fall back to Pillow's font and show '?'.
fonts:
	@command -v fc-list >/dev/null 2>&1 && [ -n "$$(fc-list :lang=zh file)" ] || { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq fontconfig fonts-wqy-zenhei; }

# Set up a node home with the sample studies and serve it in the foreground (Ctrl-C stops it).
run: venv fonts
	test -f $(PACSNODE_HOME)/pacsnode.toml || $(BIN)/pacsnode --home $(PACSNODE_HOME) init --institution PRV001
	$(BIN)/pacsnode --home $(PACSNODE_HOME) import sample_dicom
	$(BIN)/pacsnode --home $(PACSNODE_HOME) serve

test: venv peers fonts
	$(BIN)/python -m pytest -q -p no:cacheprovider

samples: venv
	$(BIN)/python scripts/make_sample_dicom.py sample_dicom

bench: venv peers
	$(BIN)/python -m bench

bench-quick: venv peers
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache
