"""Fetch the pinned OHIF viewer from the npm registry into a cache, verified and trimmed.

Why a cache outside the repository: the viewer is a 50 MB third-party build; nothing downloaded
is committed. Why a pinned sha512: the registry's ``dist.integrity`` of ``@ohif/app@3.13.2`` is
recorded here, so a changed or substituted tarball is refused before anything is unpacked.

The build expects to live at ``/``; pacsnode serves it at ``/viewer/``, so the few places that
name the public path (``window.PUBLIC_URL``, webpack's public path, absolute ``src``/``href`` and
CSS ``url(/...)``) are rewritten once here. What the viewer does not need for reading studies is
dropped: the ONNX runtime (AI segmentation, 136 MB), the microscopy viewer, source maps, the
service worker, the Google/OIDC sample configuration and the demo ``app-config.js`` (``serve``
generates its own).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import quote

OHIF_VERSION = "3.13.2"
TARBALL_URL = f"https://registry.npmjs.org/@ohif/app/-/app-{OHIF_VERSION}.tgz"
# `npm view @ohif/app@3.13.2 dist.integrity`
INTEGRITY = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
PUBLIC_PATH = "/viewer/"
MAX_TARBALL = 200 * 1024 * 1024  # the 3.13.2 tarball is ~50 MB; anything far larger is not it
MARKER = "PACSNODE-VERIFIED"

DROP_DIRS = ("ort", "dicom-microscopy-viewer")
DROP_FILES = ("sw.js", "google.js", "oidc-client.min.js", "silent-refresh.html", "_headers", "_redirects",
              "serve.json", "app-config.js")


def study_path(study_uid: str) -> str:
    """The path that opens one study in the served viewer (``pacsnode studies --json``, ``study show``)."""
    return f"{PUBLIC_PATH}viewer?StudyInstanceUIDs={quote(study_uid, safe='.')}"


class OhifInstallError(Exception):
    """The viewer could not be fetched or did not verify; nothing was installed."""


def cache_root() -> Path:
    """``$PACSNODE_VIEWER_CACHE`` or ``$XDG_CACHE_HOME/pacsnode/ohif`` (``~/.cache/...``)."""
    explicit = os.environ.get("PACSNODE_VIEWER_CACHE", "")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME", "") or str(Path.home() / ".cache")
    return Path(base) / "pacsnode" / "ohif"


def installed_dir(root: Path | None = None) -> Path:
    """Where the prepared build of the pinned version lives (its ``dist``)."""
    return (root or cache_root()) / OHIF_VERSION / "dist"


def is_installed(root: Path | None = None) -> bool:
    """True only when the marker written after verification names the pinned integrity."""
    marker = installed_dir(root).parent / MARKER
    try:
        return marker.read_text(encoding="ascii").strip() == INTEGRITY
    except OSError:
        return False


def verify(data: bytes, integrity: str = INTEGRITY) -> None:
    """Refuse ``data`` unless its SHA-512 is the pinned Subresource-Integrity value."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise OhifInstallError(f"unsupported integrity algorithm {algorithm!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")
    if actual != expected:
        raise OhifInstallError(f"@ohif/app {OHIF_VERSION} checksum mismatch: got sha512-{actual}")


def download(url: str = TARBALL_URL, timeout: float = 120.0) -> bytes:
    """The tarball's bytes, bounded in size."""
    if not url.startswith("https://"):
        raise OhifInstallError(f"refusing a non-https tarball URL: {url}")
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (https only, checked above)
        data = response.read(MAX_TARBALL + 1)
    if len(data) > MAX_TARBALL:
        raise OhifInstallError("tarball larger than expected; refused")
    return data


def _unpack(data: bytes, target: Path) -> Path:
    """Extract the npm tarball (``package/...``) with tarfile's ``data`` filter: no absolute
    paths, no ``..``, no links out of ``target``, no device files."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        archive.extractall(target, filter="data")
    dist = target / "package" / "dist"
    if not (dist / "index.html").is_file():
        raise OhifInstallError("tarball has no dist/index.html")
    return dist


def _trim(dist: Path) -> None:
    for name in DROP_DIRS:
        shutil.rmtree(dist / name, ignore_errors=True)
    for name in DROP_FILES:
        (dist / name).unlink(missing_ok=True)
    for path in dist.rglob("*.map"):
        path.unlink()
    for path in (dist / "assets").glob("apple-touch-startup-image-*"):
        path.unlink()


def _rewrite(path: Path, replacements: list[tuple[str, str]]) -> int:
    text = path.read_text(encoding="utf-8")
    count = 0
    for pattern, replacement in replacements:
        text, n = re.subn(pattern, replacement, text)
        count += n
    if count:
        path.write_text(text, encoding="utf-8")
    return count


def relocate(dist: Path, public_path: str = PUBLIC_PATH) -> None:
    """Move the build from ``/`` to ``public_path``; fail when the build does not look as expected
    (a different build would otherwise load its chunks from ``/`` and show a blank page)."""
    html = _rewrite(dist / "index.html", [
        (r'window\.PUBLIC_URL="/"', f'window.PUBLIC_URL="{public_path}"'),
        (r'(src|href)="/(?!/)', rf'\1="{public_path}'),
    ])
    runtime = sum(_rewrite(path, [(r'__webpack_require__\.p = "/";', f'__webpack_require__.p = "{public_path}";')])
                  for path in dist.glob("*.js"))
    for css in dist.glob("*.css"):
        _rewrite(css, [(r"url\(/(?!/)", f"url({public_path}")])
    if html < 3 or runtime < 1:
        raise OhifInstallError(f"unexpected build layout (index.html rewrites {html}, webpack runtimes {runtime})")


def install(root: Path | None = None, data: bytes | None = None) -> Path:
    """Fetch (unless ``data`` is given), verify, unpack, trim and relocate; return the dist folder.

    Built in a temporary folder beside the target and renamed into place, so a failed or
    interrupted install leaves the previous state (or nothing), never half a viewer.
    """
    root = root or cache_root()
    if is_installed(root):
        return installed_dir(root)
    data = download() if data is None else data
    verify(data)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".ohif-", dir=root))
    try:
        dist = _unpack(data, work)
        _trim(dist)
        relocate(dist)
        final = root / OHIF_VERSION
        staged = work / OHIF_VERSION
        staged.mkdir()
        dist.rename(staged / "dist")
        (staged / MARKER).write_text(INTEGRITY + "\n", encoding="ascii")
        if final.exists():
            shutil.rmtree(final)
        staged.rename(final)
        return final / "dist"
    finally:
        shutil.rmtree(work, ignore_errors=True)
