"""pacsnode.toml → NodeConfig: defaults, what init writes, and errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from pacsnode.config import NodeConfig, load_config, parse_config, render_config, validate_aet, validate_port
from pacsnode.errors import ConfigError
from pacsnode.model import DuplicatePolicy


def test_defaults(tmp_path: Path) -> None:
    config = parse_config({}, tmp_path)
    assert (config.aet, config.host, config.port, config.institution) == ("PACSNODE", "127.0.0.1", 11112, "")
    assert config.store.accept_from == "any"
    assert config.store.duplicates is DuplicatePolicy.KEEP_FIRST
    assert (config.store.quota_bytes, config.store.stable_seconds) == (0, 60)
    assert (config.query.max_results, config.query.case_sensitive_pn) == (1000, True)
    assert config.network.strict_called_aet is False
    assert config.network.max_pdu == 1_048_576
    assert (config.storage_path, config.index_path, config.temp_path) == (
        tmp_path / "storage", tmp_path / "index.sqlite", tmp_path / "tmp")


def test_the_file_init_writes_parses_to_the_defaults(tmp_path: Path) -> None:
    text = render_config("COUNTY_PACS", "10.0.0.5", 4242, "CTY001")
    config = parse_config(tomllib.loads(text), tmp_path)
    defaults = parse_config({}, tmp_path)
    assert (config.aet, config.host, config.port, config.institution) == ("COUNTY_PACS", "10.0.0.5", 4242, "CTY001")
    assert (config.store, config.query, config.network) == (defaults.store, defaults.query, defaults.network)


def test_values_are_read(tmp_path: Path) -> None:
    config = parse_config({
        "node": {"aet": "PRV_PACS", "port": 104, "storage_dir": "images"},
        "store": {"accept_from": "registered", "duplicates": "replace", "quota_bytes": 10_000},
        "query": {"max_results": 0, "case_sensitive_pn": False},
        "network": {"strict_called_aet": True, "acse_timeout": 5, "max_associations": 4},
    }, tmp_path)
    assert (config.aet, config.port, config.storage_path) == ("PRV_PACS", 104, tmp_path / "images")
    assert (config.store.accept_from, config.store.duplicates, config.store.quota_bytes) == (
        "registered", DuplicatePolicy.REPLACE, 10_000)
    assert (config.query.max_results, config.query.case_sensitive_pn) == (0, False)
    assert config.network.strict_called_aet is True
    assert config.network.acse_timeout == 5.0 and isinstance(config.network.acse_timeout, float)
    assert config.network.max_associations == 4


def test_config_is_frozen_and_overrides_make_a_copy(tmp_path: Path) -> None:
    config = parse_config({}, tmp_path)
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]
    other = config.with_overrides(port=4242, aet=None)
    assert (other.port, other.aet, config.port) == (4242, "PACSNODE", 11112)


@pytest.mark.parametrize("tables, key", [
    ({"node": {"aet": ""}}, "aet"),
    ({"node": {"aet": "A_TITLE_THAT_IS_TOO_LONG"}}, "aet"),
    ({"node": {"aet": "BACK\\SLASH"}}, "aet"),
    ({"node": {"aet": 42}}, "aet"),
    ({"node": {"port": 0}}, "port"),
    ({"node": {"port": 70000}}, "port"),
    ({"node": {"port": "11112"}}, "port"),
    ({"node": {"port": True}}, "port"),
    ({"node": {"institution": 7}}, "institution"),
    ({"node": {"storage_dir": ["a"]}}, "storage_dir"),
    ({"store": {"accept_from": "everyone"}}, "accept_from"),
    ({"store": {"duplicates": "keep-last"}}, "duplicates"),
    ({"store": {"quota_bytes": "10GB"}}, "quota_bytes"),
    ({"store": {"stable_seconds": 1.5}}, "stable_seconds"),
    ({"query": {"max_results": "many"}}, "max_results"),
    ({"query": {"case_sensitive_pn": "yes"}}, "case_sensitive_pn"),
    ({"network": {"strict_called_aet": 1}}, "strict_called_aet"),
    ({"network": {"max_pdu": 1.5}}, "max_pdu"),
    ({"network": {"acse_timeout": "30"}}, "acse_timeout"),
    ({"network": {"dimse_timeout": False}}, "dimse_timeout"),
    ({"store": {"quota_bytes": -1}}, "quota_bytes"),
    ({"store": {"stable_seconds": -60}}, "stable_seconds"),
    ({"query": {"max_results": -5}}, "max_results"),
    ({"network": {"max_pdu": -1}}, "max_pdu"),
    ({"network": {"max_associations": 0}}, "max_associations"),
    ({"network": {"network_timeout": -1}}, "network_timeout"),
    ({"network": {"acse_timeout": 0}}, "acse_timeout"),
    ({"store": "registered"}, "[store]"),
    ({"network": 3}, "[network]"),
])
def test_each_validation_error_names_the_key(tmp_path: Path, tables: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(tables, tmp_path, source="/srv/node/pacsnode.toml")
    message = str(caught.value)
    assert key in message
    assert "/srv/node/pacsnode.toml" in message
    assert "\n" not in message


def test_a_missing_file_says_how_to_create_the_node(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nosuch")
    assert "pacsnode.toml" in str(caught.value) and "init" in str(caught.value)


def test_a_file_that_is_not_toml_is_named(tmp_path: Path) -> None:
    (tmp_path / "pacsnode.toml").write_text("[node\naet = ", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert str(tmp_path / "pacsnode.toml") in str(caught.value)


def test_load_config_reads_the_home(tmp_path: Path) -> None:
    (tmp_path / "pacsnode.toml").write_text(render_config("TWN_PACS", "127.0.0.1", 11113, "TWN001"), encoding="utf-8")
    config = load_config(tmp_path)
    assert isinstance(config, NodeConfig)
    assert (config.home, config.aet, config.port, config.institution) == (tmp_path, "TWN_PACS", 11113, "TWN001")


@pytest.mark.parametrize("aet, ok", [("PACSNODE", True), ("A", True), ("SIXTEEN_CHARS_AE", True),
                                     ("SEVENTEEN_CHARS_A", False), ("", False), ("   ", False), ("BAD\\AE", False),
                                     ("ÄE", False), ("TAB\tAE", False)])
def test_ae_title_rules(aet: str, ok: bool) -> None:
    if ok:
        assert validate_aet(aet, "--aet") == aet.strip()
    else:
        with pytest.raises(ConfigError, match="--aet"):
            validate_aet(aet, "--aet")


@pytest.mark.parametrize("port, ok", [(1, True), (65535, True), (0, False), (65536, False), (-1, False),
                                      ("104", False), (None, False)])
def test_port_rules(port: Any, ok: bool) -> None:
    if ok:
        assert validate_port(port, "--port") == port
    else:
        with pytest.raises(ConfigError, match="--port"):
            validate_port(port, "--port")
