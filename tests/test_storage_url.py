"""``[storage] url`` is checked when pacsnode.toml is read: a typo or credentials in the URL stop every
command with a message naming the setting, and an S3 node without credentials in its environment
says which variables to set (never storing into the folder instead)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsnode.config import parse_config
from pacsnode.errors import ConfigError
from pacsnode.node import Node
from pacsnode.storage.filesystem import FileStorage
from pacsnode.storage.s3 import S3Storage


def storage_config(home: Path, url: str):  # noqa: ANN201
    return parse_config({"storage": {"url": url}}, home)


@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:8333/bucket", "use s3://"),
    ("s3://AB", "not an S3 bucket name"),
    ("s3://key:secret@bucket", "credentials do not belong in the URL"),
    ("s3://bucket/../other", "prefix part"),
    ("s3://bucket/a b", "prefix part"),
    ("s3://bucket?endpoint=file:///etc", "must be http(s)://host[:port]"),
    ("s3://bucket?endpoint=http://u:p@host:1", "must be http(s)://host[:port]"),
    ("s3://bucket?endpoint=http://host:99999", "bad port"),
    ("s3://bucket?endpont=http://host:1", "unknown URL parameter 'endpont'"),
    ("s3://bucket?endpoint=http://a:1&endpoint=http://b:2", "given 2 times"),
    ("s3://bucket?region=../x", "not a region name"),
])
def test_a_bad_storage_url_is_refused_naming_the_setting(tmp_path: Path, url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        storage_config(tmp_path, url)
    assert "[storage].url" in str(caught.value) and says in str(caught.value)
    assert "secret" not in str(caught.value)


def test_no_url_is_the_storage_folder_and_an_s3_url_opens_an_s3_area(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    folder = Node(parse_config({}, tmp_path / "a"))
    try:
        assert isinstance(folder.storage, FileStorage)
    finally:
        folder.close()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")
    (tmp_path / "b").mkdir()
    s3 = Node(storage_config(tmp_path / "b", "s3://pacs-archive/prv/001?endpoint=http://127.0.0.1:1/"))
    try:
        assert isinstance(s3.storage, S3Storage)
        assert s3.storage.location.prefix == "prv/001/" and s3.storage.location.endpoint == "http://127.0.0.1:1"
        assert "wJalrXUtnFEMI" not in repr(s3.storage) + s3.storage.describe()
    finally:
        s3.close()


def test_an_s3_node_without_credentials_in_its_environment_is_refused(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        Node(storage_config(tmp_path, "s3://pacs-archive?endpoint=http://127.0.0.1:1"))
