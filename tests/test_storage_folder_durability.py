"""A file linked into a folder that another store made, but has not yet made durable, is durable before Success.

A store that makes a folder syncs its parent (the folder's name) after its link. A second store
(another association's thread, a worker process) that finds the folder already there linked into
it and synced only it: its file's name was durable in a folder whose own name might not be yet,
and a power cut between its Success and the first store's sync of the parent lost the instance.
Only a power cut shows that, so this test watches the system calls of ``FileStorage.place`` under
``strace``: the folder's parents are synced at the first store into it in a process, not again.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pacsnode.storage.filesystem import relative_path_for

STRACE = shutil.which("strace")
pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed (make dcmtk installs it)")

UID = "1.2.826.0.1.3680043.10.1173.77.1"
PLACE_TWICE = """
import sys
from pathlib import Path
from pacsnode.storage.filesystem import FileStorage
storage = FileStorage(Path(sys.argv[1]), fsync=True)
for temp in sys.argv[3:]:
    storage.place(Path(temp), sys.argv[2])
"""


def test_a_folder_made_by_another_store_has_its_name_synced_by_the_first_store_into_it(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    folder = root / os.path.dirname(relative_path_for(UID))
    folder.mkdir(parents=True)  # another process made aa/bb and has not synced aa (nor the root) yet
    temps = []
    for number in range(2):  # the same UID twice: the second copy gets a sibling name in the same folder
        temp = tmp_path / f"incoming{number}.part"
        temp.write_bytes(b"DICM" * 100)
        temps.append(str(temp))
    trace = tmp_path / "place.strace"
    subprocess.run([str(STRACE), "-f", "-qq", "-y", "-o", str(trace), "-e", "trace=fsync",
                    sys.executable, "-c", PLACE_TWICE, str(root), UID, *temps], check=True, timeout=60)
    # each fsync begun (the syncs run side by side, so strace may split one into "<unfinished ...>" and
    # "<... fsync resumed>" lines; place() raises if any failed, and check=True saw it exit 0)
    synced = re.findall(r"^\d+\s+fsync\(\d+<([^>]*)>", trace.read_text(), re.MULTILINE)
    real = os.path.realpath
    assert synced.count(real(folder)) == 2, synced  # each link
    assert synced.count(real(folder.parent)) == 1, f"aa/bb's name in aa was not made durable: {synced}"
    assert synced.count(real(root)) == 1, f"aa's name in the root was not made durable: {synced}"
