"""Background work is claimed by exactly one node when several share one index (issue 16 item 3).

Claimers run in separate processes on one SQLite index, as the nodes of a shared archive do;
each writes what it claimed, and the union must be every item exactly once. The stable-study
pass of two nodes on one index checks each study once. A claim whose lease passed (its node died)
is taken over, and the dead node can no longer finish it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from click.testing import CliRunner

from pacsnode.cli import main
from pacsnode.config import load_config
from pacsnode.index import work_queue
from pacsnode.index.sqlite import SqliteIndex
from pacsnode.node import Node
from support import a_ct_file, make_series

CLAIMER = """
import json, sys
from pathlib import Path
from pacsnode.index import work_queue
from pacsnode.index.sqlite import SqliteIndex
index = SqliteIndex(Path(sys.argv[1]))
mine = []
while batch := work_queue.claim(index, "test-job", sys.argv[2], limit=3):
    for item in batch:
        mine.append(item)
        assert work_queue.finish(index, "test-job", item, sys.argv[2])
print(json.dumps(mine))
"""


def test_items_claimed_by_four_processes_on_one_index_run_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    index = SqliteIndex(path)
    keys = [f"job-{n:03d}" for n in range(300)]
    assert work_queue.queue(index, "test-job", keys) == len(keys)
    assert work_queue.queue(index, "test-job", keys) == 0  # queuing again changes nothing
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(path), f"node-{n}"], stdout=subprocess.PIPE, text=True)
             for n in range(4)]
    claimed = {f"node-{n}": json.loads(proc.communicate(timeout=120)[0]) for n, proc in enumerate(procs)}
    assert all(proc.returncode == 0 for proc in procs)
    every = [item for items in claimed.values() for item in items]
    assert sorted(every) == keys, "an item was claimed twice or never"
    rows = work_queue.items(index, "test-job")
    assert {r["state"] for r in rows} == {"done"} and {r["attempts"] for r in rows} == {1}
    assert all(r["node"] in claimed and r["item"] in claimed[r["node"]] for r in rows)
    index.close()


def test_a_claim_whose_lease_passed_is_taken_over_and_the_first_node_cannot_finish_it(tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "index.sqlite")
    work_queue.queue(index, "test-job", ["only"])
    assert work_queue.claim(index, "test-job", "dead-node", lease_seconds=0) == ["only"]
    assert work_queue.claim(index, "test-job", "live-node") == ["only"]  # the lease has passed
    assert work_queue.claim(index, "test-job", "third-node") == []  # live-node's lease holds
    assert not work_queue.finish(index, "test-job", "only", "dead-node")
    assert work_queue.finish(index, "test-job", "only", "live-node")
    assert work_queue.claim(index, "test-job", "third-node") == []  # done
    assert work_queue.queue(index, "test-job", ["only"], generation="2") == 1  # changed since: ready again
    assert work_queue.claim(index, "test-job", "third-node") == ["only"]
    index.close()


def test_two_nodes_on_one_index_check_each_quiet_study_once(tmp_path: Path) -> None:
    homes = []
    for n in (1, 2):
        home = tmp_path / f"n{n}"
        result = CliRunner().invoke(main, ["--home", str(home), "init", "--institution", "PRV001"])
        assert result.exit_code == 0, result.output
        text = (home / "pacsnode.toml").read_text(encoding="utf-8")
        text = text.replace('index_file = "index.sqlite"', f'index_file = "{tmp_path / "index.sqlite"}"')
        text = text.replace('storage_dir = "storage"', f'storage_dir = "{tmp_path / "storage"}"')
        text = text.replace('name = ""', f'name = "node-{n}"')
        (home / "pacsnode.toml").write_text(text, encoding="utf-8")
        homes.append(home)
    one, two = (Node(load_config(home)) for home in homes)
    studies = []
    for n in range(12):
        files = make_series(a_ct_file(), tmp_path / f"s{n}", 1, PatientID=f"Q{n}")
        report = one.import_paths(files)  # an import checks its studies at once: undo that below
        assert report.stored == 1
        studies.extend(report.qc)
    one.index.connection().execute("UPDATE study_qc SET checked_at = ''")  # as if stored over the network
    checked: dict[str, list[str]] = {}

    def run(node: Node) -> None:
        checked[node.config.node_name] = node.qc.run_stable(stable_seconds=0, batch=2)

    threads = [threading.Thread(target=run, args=(node,)) for node in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    every = checked["node-1"] + checked["node-2"]
    assert sorted(every) == sorted(studies), checked
    assert one.qc.run_stable(stable_seconds=0) == [] and two.qc.run_stable(stable_seconds=0) == []
    one.close()
    two.close()
