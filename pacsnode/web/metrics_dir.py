"""Where prometheus-client's multiprocess samples go; set before prometheus_client is imported.

Kept apart from ``metrics`` (which imports prometheus_client) because the environment variable
only works when it is set before that import, in the serving parent and so in every worker.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(home: Path, clean: bool) -> None:
    """Point prometheus-client at ``<home>/metrics``; the serving parent empties it first."""
    folder = home / "metrics"
    if clean and folder.is_dir():
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700, exist_ok=True)
    os.environ[ENV] = str(folder)
