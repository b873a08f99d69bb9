"""`make viewer`'s installer refuses anything but the pinned @ohif/app and installs all or nothing.

No network here: the installer is given bytes. A tampered tarball fails the sha512 check before
anything is unpacked; a build whose layout does not match (it would load its chunks from ``/``)
is refused; a partial install never looks installed.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from pacsnode.web import ohif_install
from pacsnode.web.ohif_install import OhifInstallError


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_tarball_that_is_not_the_pinned_one_is_refused_and_nothing_is_installed(tmp_path: Path) -> None:
    forged = _tarball({"package/dist/index.html": b"<script>alert(1)</script>"})
    with pytest.raises(OhifInstallError, match="checksum mismatch"):
        ohif_install.install(tmp_path, data=forged)
    assert not ohif_install.is_installed(tmp_path)
    assert not (tmp_path / ohif_install.OHIF_VERSION).exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "nothing unpacked"


def test_a_build_with_another_layout_is_refused(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<html>no public path here</html>", encoding="utf-8")
    (dist / "app.bundle.js").write_text("console.log(1)", encoding="utf-8")
    with pytest.raises(OhifInstallError, match="unexpected build layout"):
        ohif_install.relocate(dist)


def test_relocation_moves_every_public_path_under_viewer(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text(
        '<script>window.PUBLIC_URL="/"</script><link href="/app.css"><script src="/app.bundle.js"></script>'
        '<a href="//elsewhere.example/x">', encoding="utf-8")
    (dist / "app.bundle.js").write_text('__webpack_require__.p = "/";', encoding="utf-8")
    (dist / "app.css").write_text("a{background:url(/font.woff2)}", encoding="utf-8")
    ohif_install.relocate(dist)
    html = (dist / "index.html").read_text(encoding="utf-8")
    assert 'window.PUBLIC_URL="/viewer/"' in html and 'href="/viewer/app.css"' in html
    assert 'src="/viewer/app.bundle.js"' in html and 'href="//elsewhere.example/x"' in html
    assert (dist / "app.bundle.js").read_text(encoding="utf-8") == '__webpack_require__.p = "/viewer/";'
    assert "url(/viewer/font.woff2)" in (dist / "app.css").read_text(encoding="utf-8")


def test_a_marker_naming_another_integrity_is_not_installed(tmp_path: Path) -> None:
    folder = tmp_path / ohif_install.OHIF_VERSION
    (folder / "dist").mkdir(parents=True)
    (folder / "dist" / "index.html").write_text("x", encoding="utf-8")
    (folder / ohif_install.MARKER).write_text("sha512-somethingelse\n", encoding="ascii")
    assert not ohif_install.is_installed(tmp_path)


def test_study_path_is_the_viewer_route() -> None:
    assert ohif_install.study_path("1.2.3") == "/viewer/viewer?StudyInstanceUIDs=1.2.3"
    assert ohif_install.study_path("1.2&x=<y>") == "/viewer/viewer?StudyInstanceUIDs=1.2%26x%3D%3Cy%3E"


def test_studies_json_and_study_show_give_the_viewer_url(tmp_path: Path) -> None:
    from support import SAMPLE_DIR, NodeProcess

    node = NodeProcess(tmp_path / "home", institution="PRV001").init("--web")
    imported = node.cli("import", str(SAMPLE_DIR / "PRV001" / "P0002"))
    assert imported.returncode == 0, imported.explain()
    rows = json.loads(node.cli("studies", "--json").stdout)
    assert [r["viewer_url"] for r in rows] == ["/viewer/viewer?StudyInstanceUIDs=1.2.826.0.1.3680043.10.1078.1.8"]
    shown = node.cli("study", "show", "1.2.826.0.1.3680043.10.1078.1.8")
    assert "viewer http://127.0.0.1:8042/viewer/viewer?StudyInstanceUIDs=1.2.826.0.1.3680043.10.1078.1.8" in shown.stdout
