"""``[index] url`` in pacsnode.toml (issue 16.1): validated, and never echoed with its password."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsnode.config import parse_config, redacted_url
from pacsnode.errors import ConfigError


def test_an_absent_index_url_keeps_the_sqlite_file_in_the_home(tmp_path: Path) -> None:
    config = parse_config({}, tmp_path)
    assert config.index.url == "" and config.index_path == tmp_path / "index.sqlite"


def test_a_postgresql_url_is_accepted(tmp_path: Path) -> None:
    url = "postgresql://pacsnode@127.0.0.1:5432/archive"
    assert parse_config({"index": {"url": url}}, tmp_path).index.url == url


@pytest.mark.parametrize("url,says", [
    ("mysql://u@h/db", "only postgresql://"),
    ("sqlite:///x", "only postgresql://"),
    ("postgresql:///db", "names no host"),
    ("postgresql://u@h:5432", "names no database"),
    ("postgresql://u@h:5432/a/b", "names no database"),
    ("postgresql://u@h:99999/db", "not a valid URL"),
    ("postgresql://u@h/db name", "blank or control"),
])
def test_a_bad_index_url_is_refused_with_the_reason(tmp_path: Path, url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_config({"index": {"url": url}}, tmp_path)


def test_a_refused_index_url_never_shows_its_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"index": {"url": "mysql://admin:hunter2-secret@db/x"}}, tmp_path)
    assert "hunter2-secret" not in str(refused.value) and "admin:***@db" in str(refused.value)


def test_redacted_url_hides_only_the_password() -> None:
    assert redacted_url("postgresql://u:pw@h:5/d") == "postgresql://u:***@h:5/d"
    assert redacted_url("postgresql://u@h:5/d") == "postgresql://u@h:5/d"


def test_an_index_url_of_another_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        parse_config({"index": {"url": 5}}, tmp_path)
