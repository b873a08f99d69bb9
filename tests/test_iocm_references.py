"""A rejection note whose references are not UIDs is refused before anything is kept, on both index backends.

The note's references went into the ``rejections`` table as they were read: a NUL inside a
Referenced SOP Instance UID, or a 'UID' of thousands of digits. SQLite kept such a row (it can
name nothing) and answered Success; PostgreSQL refused the row (NUL in text; an index row over
its size limit) after the note itself was indexed, so the C-STORE failed with an internal error
for an instance that was kept, and every retry, answered from the kept-first duplicate, failed
again. A reference that is not a UID (digits and dots, at most 64) makes the note invalid.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from pydicom import dcmread

from iocm_factory import rejection_note
from pacsnode.config import NodeConfig
from pacsnode.errors import InvalidInstance
from pacsnode.model import Caller, StoreResult
from pacsnode.node import Node
from support import write_instance

STUDY = "1.2.826.0.1.3680043.10.1173.61"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_node(request: pytest.FixtureRequest, make_config: Callable[..., NodeConfig]) -> Iterator[Node]:
    tables: dict[str, Any] = {}
    if request.param == "postgres":
        tables["index"] = {"url": request.getfixturevalue("postgres_url")}
    node = Node(make_config(**tables))
    yield node
    node.close()


def _send(node: Node, path: Path) -> StoreResult:
    temp = node.new_temp_file()
    shutil.copyfile(path, temp)
    return node.store_file(temp, Caller.nobody("MODALITY", "127.0.0.1")).result


@pytest.mark.parametrize("bad", ["1.2.3\x004.5", "1." + "2" * 3000], ids=["nul", "3000-digits"])
def test_a_rejection_note_referencing_no_uid_is_refused_and_nothing_is_kept(any_node: Node, tmp_path: Path,
                                                                          ct_template: Path, bad: str) -> None:
    image = write_instance(ct_template, tmp_path / "image.dcm", study_uid=STUDY, series_uid=f"{STUDY}.1",
                           sop_instance_uid=f"{STUDY}.1.1")
    assert _send(any_node, image) is StoreResult.STORED
    ds = dcmread(image, stop_before_pixels=True)
    note = rejection_note(image, [(f"{STUDY}.1", str(ds.SOPClassUID), f"{STUDY}.1.1"),
                                  (f"{STUDY}.1", str(ds.SOPClassUID), bad)], tmp_path / "note.dcm")
    with pytest.raises(InvalidInstance, match="not a valid UID"):
        _send(any_node, note)
    assert not any_node.index.has_instance(str(dcmread(note).SOPInstanceUID))
    assert any_node.index.query("SELECT COUNT(*) FROM rejections")[0][0] == 0
    assert any_node.index.query("SELECT hidden FROM instances WHERE sop_instance_uid = ?", (f"{STUDY}.1.1",)) \
        [0][0] == ""
