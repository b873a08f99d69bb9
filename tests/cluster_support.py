"""Several ``pacsnode serve`` processes on one archive (issue 16): set-up and DCMTK helpers.

An *archive* is an index and a storage area; the nodes of one archive are homes whose
configuration points at the same ones. ``SharedArchive("files", folder)`` is a SQLite index
file and a storage folder outside every home (absolute ``[node] index_file`` and
``storage_dir``); ``SharedArchive("postgres+s3", ...)`` names a PostgreSQL URL and an S3 URL.
Each node is a real ``pacsnode serve`` (``NodeProcess``) with its own name, ports and home.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from support import LOOPBACK, dcmtk, run_tool
from support import OneNodeProcess as NodeProcess  # each node of a SharedArchive is one serve, in any run

INSTITUTION = "PRV001"


@dataclass
class SharedArchive:
    """Where the nodes' shared index and storage are, and how a home is pointed at them."""

    kind: str  # "files": SQLite + folder; "postgres+s3": [index] url + [storage] url
    folder: Path
    index_url: str = ""
    storage_url: str = ""
    nodes: list[NodeProcess] = field(default_factory=list)

    def node(self, home: Path, name: str, *, web: bool = True, stable_seconds: int = 60) -> NodeProcess:
        """A new node home (initialised, not started) of this archive, named ``name``."""
        node = NodeProcess(home, institution=INSTITUTION).init()
        node.configure("node", "name", name)
        node.configure("network", "acse_timeout", 3).configure("network", "dimse_timeout", 20)
        node.configure("store", "stable_seconds", stable_seconds)
        if self.kind == "files":
            node.configure("node", "index_file", str(self.folder / "index.sqlite"))
            node.configure("node", "storage_dir", str(self.folder / "storage"))
        else:
            node.configure("index", "url", self.index_url)
            node.configure("storage", "url", self.storage_url)
        if web:
            node.enable_web()
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def work_items(self, kind: str = "qc-stable") -> dict[str, dict[str, Any]]:
        """The archive's work queue (``index.work_queue``), read through the index seam, by item."""
        from pacsnode.config import load_config
        from pacsnode.index import work_queue
        from pacsnode.index.base import open_index

        index = open_index(load_config(self.nodes[0].home))
        try:
            return {row["item"]: row for row in work_queue.items(index, kind)}
        finally:
            index.close()

    def plant(self, relative: str, data: bytes, s3: Any = None) -> None:
        """A file in the shared storage that no row points to (a store between "placed" and "indexed")."""
        if self.kind == "files":
            path = self.folder / "storage" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            client, bucket, prefix = s3
            client.put_object(Bucket=bucket, Key=f"{prefix}/{relative}", Body=data)

    def holds(self, relative: str, s3: Any = None) -> bool:
        if self.kind == "files":
            return (self.folder / "storage" / relative).exists()
        client, bucket, prefix = s3
        return "Contents" in client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{relative}")

    def unplant(self, relative: str, s3: Any = None) -> None:
        if self.kind == "files":
            (self.folder / "storage" / relative).unlink(missing_ok=True)
        else:
            client, bucket, prefix = s3
            client.delete_object(Bucket=bucket, Key=f"{prefix}/{relative}")


def add_peer(node: NodeProcess, name: str, aet: str, port: int, institution: str = INSTITUTION,
             permissions: str = "") -> None:
    """Register a peer through one node's CLI: it lives in the index, so every node of the archive knows it."""
    args = ["peer", "add", name, "--aet", aet, "--host", LOOPBACK, "--port", str(port), "--institution",
            institution, "--replace"]
    if permissions:
        args += ["--permissions", permissions]
    result = node.cli(*args)
    assert result.returncode == 0, result.explain()


def find_study_uids(node: NodeProcess, patient_id: str, aet: str = "FINDSCU") -> list[str]:
    """Study Instance UIDs DCMTK findscu gets from ``node`` for a Patient ID (study root)."""
    result = run_tool([dcmtk("findscu"), "-v", "-S", "-to", "20", "-aet", aet, "-aec", node.aet,
                       "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={patient_id}", "-k", "StudyInstanceUID",
                       LOOPBACK, str(node.port)])
    assert "Received Final Find Response (Success)" in result.output, result.explain()
    # findscu -v prints an odd-length UID with its NUL padding inside the brackets
    return re.findall(r"\(0020,000d\) UI \[([0-9.]+)[ \x00]?\]", result.output)


def move_study(node: NodeProcess, study_uid: str, destination: str, aet: str = "MOVESCU") -> dict[str, Any]:
    """C-MOVE one study through ``node`` with DCMTK movescu; the final response's status and counts."""
    result = run_tool([dcmtk("movescu"), "-d", "-S", "-to", "20", "-ta", "20", "-td", "60", "-aet", aet,
                       "-aec", node.aet, "-aem", destination, "-k", "QueryRetrieveLevel=STUDY",
                       "-k", f"StudyInstanceUID={study_uid}", LOOPBACK, str(node.port)], timeout=90)
    blocks = re.findall(r"=+ INCOMING DIMSE MESSAGE =+(.*?)=+ END DIMSE MESSAGE =+", result.output, re.S)
    moves = [b for b in blocks if "C-MOVE RSP" in b]
    assert moves, result.explain()
    last = moves[-1]
    status = re.search(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", last)
    completed = re.search(r"Completed Suboperations\s*:\s*(\d+)", last)
    assert status, result.explain()
    return {"status": int(status.group(1), 16), "completed": int(completed.group(1)) if completed else None}


def wado_instance(node: NodeProcess, token: str, study: str, series: str, instance: str) -> requests.Response:
    """WADO-RS of one instance through ``node``'s DICOMweb (application/dicom)."""
    return requests.get(f"{node.web_url}/studies/{study}/series/{series}/instances/{instance}",
                        headers={"Authorization": f"Bearer {token}",
                                 "Accept": 'multipart/related; type="application/dicom"'}, timeout=30)


def create_token(node: NodeProcess, name: str, institution: str = INSTITUTION) -> str:
    result = node.cli("token", "create", name, "--institution", institution, "--permissions", "find,get")
    assert result.returncode == 0, result.explain()
    return result.stdout.strip().splitlines()[-1]
