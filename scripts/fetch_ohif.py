"""`make viewer`: fetch the pinned OHIF viewer (@ohif/app) into the cache, verified and trimmed.

Usage: python scripts/fetch_ohif.py [CACHE_DIR]   (default ~/.cache/pacsnode/ohif)
"""

from __future__ import annotations

import sys
from pathlib import Path

from pacsnode.web.ohif_install import OHIF_VERSION, OhifInstallError, cache_root, install, is_installed


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else cache_root()
    if is_installed(root):
        print(f"OHIF {OHIF_VERSION} already installed in {root / OHIF_VERSION}")
        return 0
    try:
        dist = install(root)
    except (OhifInstallError, OSError) as exc:
        print(f"make viewer: {exc}", file=sys.stderr)
        return 1
    print(f"OHIF {OHIF_VERSION} verified and installed in {dist}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
