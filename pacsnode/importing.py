"""``pacsnode import``: files and folders from the local disk, stored through ``Node.store_file``.

Moved out of ``node.py`` (module size): ``Node.import_paths`` delegates here. Every file goes
the store path a network C-STORE goes (validate, place, index, QC hook); the studies an
import touched are QC-checked once at the end, as a complete batch.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from pacsnode.dicom.extract import facts_from_file
from pacsnode.errors import InvalidInstance, PacsnodeError
from pacsnode.model import Caller, StoreResult

if TYPE_CHECKING:
    from pacsnode.node import Node

LOGGER = logging.getLogger(__name__)


@dataclass
class ImportReport:
    """Counts and reasons from ``pacsnode import``."""

    stored: int = 0
    duplicate: int = 0
    replaced: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    qc: dict[str, str] = field(default_factory=dict)


def import_paths(node: Node, paths: Iterable[Path], progress: Callable[[Path], None] | None = None,
                 caller: Caller | None = None) -> ImportReport:
    """Import files and folders (recursive) from the local disk, copying each file in.

    ``caller`` is who imports: the CLI passes ``Caller.local_admin()`` (the default).
    """
    node.home_lock.share()  # fail once, before the first file, while a restore or offline repair runs
    report = ImportReport()
    admin = caller or Caller.local_admin()
    touched: set[str] = set()
    for path in iter_files(paths):
        if progress:
            progress(path)
        temp = node.new_temp_file()
        try:
            shutil.copyfile(path, temp)
            outcome = node.store_file(temp, admin)
        except PacsnodeError as exc:
            report.rejected.append((str(path), str(exc)))
            continue
        except OSError as exc:
            report.rejected.append((str(path), f"cannot read: {exc.strerror or exc}"))
            temp.unlink(missing_ok=True)
            continue
        if outcome.result is not StoreResult.DUPLICATE:
            touched.add(outcome.study_uid)
        if outcome.result is StoreResult.STORED:
            report.stored += 1
        elif outcome.result is StoreResult.REPLACED:
            report.replaced += 1
        else:
            report.duplicate += 1
    for study_uid in sorted(touched):  # an import is a complete batch: its studies are stable now
        try:
            decision, _outcomes = node.qc.run(study_uid)
            report.qc[study_uid] = decision.status.value
        except PacsnodeError as exc:
            LOGGER.warning("QC of imported study %s failed: %s", study_uid, exc)
    return report


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files under the given paths (recursive, sorted, hidden files and README/scripts skipped)."""
    for root in paths:
        if root.is_file():
            yield root
        elif root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file() and not path.name.startswith(".") and path.suffix.lower() not in (".md", ".py", ".txt", ".json"):
                    yield path
        else:
            raise InvalidInstance(f"{root}: no such file or folder")


def files_on_disk(paths: list[Path]) -> list[tuple[str, str, str]]:
    """(path, SOP class, transfer syntax) of the DICOM files under ``paths`` (``send`` of files)."""
    files = []
    for path in iter_files(paths):
        facts = facts_from_file(path)
        files.append((str(path), facts.sop_class_uid, facts.transfer_syntax or "1.2.840.10008.1.2"))
    return files
