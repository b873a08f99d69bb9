"""pacsnode as an admin installs it: a wheel in a fresh venv, outside the checkout, ships its rules.

``init`` used to copy the rule files from the checkout's ``config/``; installed from a wheel it
wrote none, and peers of other institutions saw nothing. The rules are package data now
(``pacsnode/defaults/``, symbolic links to ``config/`` in the checkout). The slow test builds
the wheel, installs it (no ``-e``, own venv, cwd outside the repository), then runs ``init``,
``import``, ``serve`` and a C-FIND from DCMTK ``findscu`` calling as a registered peer of
another institution: only the shipped recognition rules can let that peer see the study.

Run alone with ``pytest -m packaging``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from pydicom import dcmread

from pacsnode.defaults import RULE_FILES, default_text
from support import LOOPBACK, REPO, SAMPLE_DIR, NodeProcess, dcmtk, free_port, have_tool, run_tool

CONFIG = REPO / "config"
RESIDENT_ID = "520100199001010011"  # CHEN^JIANGUO; his MR brain was done at PRV001 (sample study 3)
PRV_MR = "1.2.826.0.1.3680043.10.1078.1.3"
# What a wheel needs: the package, its metadata and the project files setuptools reads.
BUILD_INPUTS = ("pacsnode", "config", "pyproject.toml", "README.md", "MANIFEST.in")


@pytest.mark.parametrize("name", RULE_FILES)
def test_packaged_rule_files_are_the_config_copies(name: str) -> None:
    """One source: the package's rule files are the documented ``config/`` files, byte for byte."""
    packaged = REPO / "pacsnode" / "defaults" / name
    assert packaged.read_bytes() == (CONFIG / name).read_bytes()
    assert default_text(name) == (CONFIG / name).read_text(encoding="utf-8")


def test_init_writes_the_shipped_rules(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pacsnode.cli import main

    result = CliRunner().invoke(main, ["--home", str(tmp_path / "h"), "init", "--institution", "PRV001"])
    assert result.exit_code == 0, result.output
    for name in RULE_FILES:
        assert (tmp_path / "h" / name).read_bytes() == (CONFIG / name).read_bytes()


def _build_wheel(work: Path) -> Path:
    """Copy what a build reads (symbolic links kept, as in a clone) and build the wheel there."""
    source = work / "src"
    source.mkdir(parents=True)
    for name in BUILD_INPUTS:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(origin, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"),
                           str(source)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (work / "dist").glob("pacsnode-*.whl")
    return wheel


def _install(wheel: Path, venv: Path) -> Path:
    """A venv without the checkout or system site-packages; dependencies from pip's configured sources."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin" / "pacsnode"


@pytest.mark.packaging
@pytest.mark.interop
@pytest.mark.timeout(400)
@pytest.mark.skipif(not have_tool("findscu"), reason="DCMTK findscu is not installed")
def test_wheel_installed_outside_checkout_answers_a_peer_with_shipped_rules(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path / "build")
    with zipfile.ZipFile(wheel) as archive:
        for name in RULE_FILES:
            assert archive.read(f"pacsnode/defaults/{name}") == (CONFIG / name).read_bytes()
    pacsnode = _install(wheel, tmp_path / "venv")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    # The installed package, not the checkout: its module file lives in the new venv.
    where = subprocess.run([str(pacsnode.parent / "python"), "-c", "import pacsnode; print(pacsnode.__file__)"],
                           capture_output=True, text=True, cwd=outside, check=True).stdout.strip()
    assert where.startswith(str(tmp_path / "venv")), where

    home = outside / "node"
    port = free_port()
    init = run_tool([pacsnode, "--home", home, "init", "--institution", "PRV001", "--port", str(port)], cwd=outside)
    assert init.returncode == 0, init.explain()
    assert "not found" not in init.output
    for name in RULE_FILES:
        assert (home / name).read_bytes() == (CONFIG / name).read_bytes()
    imported = run_tool([pacsnode, "--home", home, "import", SAMPLE_DIR / "PRV001"], cwd=outside, timeout=120)
    assert imported.returncode == 0 and "rejected 0" in imported.stdout, imported.explain()
    peer = run_tool([pacsnode, "--home", home, "peer", "add", "county", "--aet", "CTY_PACS", "--host", LOOPBACK,
                     "--port", "1", "--institution", "CTY001"], cwd=outside)
    assert peer.returncode == 0, peer.explain()

    node = NodeProcess(home, command=[str(pacsnode)])
    node.port = port
    with node:
        named = _find(node, tmp_path / "named", patient=True)
        anonymous = _find(node, tmp_path / "anonymous", patient=False)
    assert [str(ds.StudyInstanceUID) for ds in named] == [PRV_MR], "the recognition rules let the county see it"
    hr = named[0].get((0x0011, 0x0010))
    assert hr is not None and str(hr.value).strip() == "PACSNODE HR"
    assert str(named[0][0x00111001].value).strip(), "the recognition advice (status) is answered"
    assert anonymous == [], "without the patient in the request, another institution sees nothing"


def _find(node: NodeProcess, out: Path, patient: bool) -> list:
    out.mkdir()
    keys = ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "(0011,0010)=PACSNODE HR", "(0011,1001)"]
    if patient:
        keys += [f"(0010,1002)[0].PatientID={RESIDENT_ID}", "(0010,1002)[0].IssuerOfPatientID=CN-RESIDENT-ID"]
    else:
        keys += ["PatientID=P0107"]
    args: list[str | os.PathLike[str]] = [dcmtk("findscu"), "-S", "-to", "20", "-aet", "CTY_PACS",
                                          "-aec", node.aet, "-X", "-od", out]
    for key in keys:
        args += ["-k", key]
    result = run_tool([*args, LOOPBACK, str(node.port)])
    assert result.returncode == 0, result.explain()
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
