"""Config typos fail closed (issue 10 item 9): every command that reads pacsnode.toml refuses an
unknown section or key, or a value out of range, with one line naming it and the nearest valid
name; a node institution recognition.toml does not know is refused at ``serve``, warned at ``init``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from pacsnode.config import SCHEMA, parse_config, render_config
from pacsnode.errors import ConfigError
from support import PACSNODE, NodeProcess, set_config

import tomllib


def _append(home: Path, text: str) -> None:
    with open(home / "pacsnode.toml", "a", encoding="utf-8") as handle:
        handle.write("\n" + text + "\n")


def _one_line_error(proc: NodeProcess, *args: str) -> str:
    result = proc.cli(*args)
    assert result.returncode != 0, result.explain()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.explain()
    return lines[0]


@pytest.mark.parametrize("typo, named, nearest", [
    ('[stor]\naccept_from = "registered"', "[stor]", "store"),
    ('[store]\naccept_form = "registered"', "accept_form", "accept_from"),
    ('[tls]\nrequire_client_certficate = true', "require_client_certficate", "require_client_certificate"),
    ("[network]\nmax_pdu = 0", "max_pdu", "4096"),
    ("[network]\nmax_associations = 0", "max_associations", "at least 1"),
    ('[store]\nduplicates = "keep-frist"', "keep-frist", "keep-first"),
])
@pytest.mark.parametrize("command", [("studies",), ("peer", "list"), ("check",), ("serve",)])
def test_every_command_refuses_a_config_typo_naming_the_key_and_the_nearest(
        node_process: Callable[..., NodeProcess], typo: str, named: str, nearest: str,
        command: tuple[str, ...]) -> None:
    proc = node_process()
    if "\n" in typo and typo.split("\n")[0].strip("[]") in ("store", "network", "tls"):
        section, assignment = typo.split("\n")
        key, value = (part.strip() for part in assignment.split("=", 1))
        set_config(proc.home, section.strip("[]"), key, tomllib.loads(f"v = {value}")["v"])
    else:
        _append(proc.home, typo)
    line = _one_line_error(proc, *command)
    assert named in line and nearest in line, line


def test_the_web_section_is_reserved_and_accepted(node_process: Callable[..., NodeProcess]) -> None:
    proc = node_process()
    set_config(proc.home, "web", "port", 8043)
    assert proc.cli("studies").returncode == 0
    set_config(proc.home, "web", "prot", 8042)
    assert "'port'" in _one_line_error(proc, "studies")


def test_the_init_template_declares_exactly_the_schema(tmp_path: Path) -> None:
    """What init writes parses, and names every declared key (the docs cannot drift from the code)."""
    data = tomllib.loads(render_config("PACSNODE", "127.0.0.1", 11112, ""))
    parse_config(data, tmp_path)
    assert {s: set(t) for s, t in data.items()} == {s: set(keys) for s, keys in SCHEMA.items()}


def test_parse_config_refuses_out_of_range_values() -> None:
    with pytest.raises(ConfigError, match=r"\[node\]\.port"):
        parse_config({"node": {"port": 70000}}, Path("/nonexistent"))
    with pytest.raises(ConfigError, match=r"\[network\]\.acse_timeout"):
        parse_config({"network": {"acse_timeout": 0}}, Path("/nonexistent"))


def test_serve_refuses_an_institution_the_rules_do_not_know_and_init_warns(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init = subprocess.run([*PACSNODE, "--home", str(home), "init", "--institution", "PRV01"],
                          capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    assert "PRV01" in init.stderr and "PRV001" in init.stderr  # warned, with the nearest code
    served = subprocess.run([*PACSNODE, "--home", str(home), "serve", "--port", "1"],
                            capture_output=True, text=True, timeout=60)
    assert served.returncode != 0
    lines = served.stderr.strip().splitlines()
    assert len(lines) == 1 and "institution" in lines[0] and "PRV001" in lines[0], served.stderr


@pytest.mark.parametrize("key", ["acse_timeout", "dimse_timeout", "network_timeout"])
@pytest.mark.parametrize("value", ["nan", "-nan", "inf"])
@pytest.mark.parametrize("command", [("peer", "list"), ("serve",)])
def test_a_timeout_that_is_not_a_finite_number_is_refused(node_process: Callable[..., NodeProcess], key: str,
                                                          value: str, command: tuple[str, ...]) -> None:
    """TOML has nan and inf: nan passed every range comparison and `serve` started with no deadline
    of ours (pynetdicom quietly substituted its own); a hostile-peer deadline must never be nan."""
    proc = node_process()
    text = (proc.home / "pacsnode.toml").read_text(encoding="utf-8")
    (proc.home / "pacsnode.toml").write_text(re.sub(rf"(?m)^{key} = [0-9.]+", f"{key} = {value}", text),
                                             encoding="utf-8")
    line = _one_line_error(proc, *command)
    assert key in line and ("finite" in line or "at most" in line), line
