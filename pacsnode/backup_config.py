"""What of a home's configuration goes into a backup, and under which names.

A backup is a self-contained image of a home: ``pacsnode.toml``, the rule files and the TLS
files it references (issue 10, item 13: a TLS node must be restorable), each under a path
relative to the home. Files the configuration names *inside* the home keep their relative
path. Files outside it (an admin's absolute path, e.g. ``/etc/pacsnode/node.key``) are
copied too, under ``external/<section>.<key>/<file name>``, and the copy of ``pacsnode.toml``
in the backup is rewritten to point there; an absolute ``storage_dir``/``index_file`` is
rewritten to the backup's own layout (``storage``, ``index.sqlite``). So ``restore`` never
needs, and never accepts, a path outside the home it restores into (issue 10, item 5).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pacsnode.config import CONFIG_NAME, NodeConfig, home_path_values
from pacsnode.errors import PacsnodeError

EXTERNAL = "external"
#: Names a configuration file may never take in a backup or a home (the data and the machinery).
RESERVED = ("storage", "index.sqlite", "manifest.json", "tmp", "serve.lock")


class ConfigCopyError(PacsnodeError):
    """The configuration cannot be backed up as a self-contained home (message says why)."""


@dataclass
class ConfigFiles:
    """The configuration of a backup: files by name in the backup, and the pacsnode.toml to write."""

    files: dict[str, Path] = field(default_factory=dict)  # name in the backup -> source on disk
    config_text: str = ""  # pacsnode.toml as it goes into the backup (rewritten when needed)
    rewritten: dict[str, str] = field(default_factory=dict)  # "[section].key" -> new value


def _inside(home: Path, value: str) -> str | None:
    """``value`` as a clean relative path when it names something inside ``home``, else None."""
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    name = path.as_posix()
    return None if path.parts[0] in RESERVED or name in RESERVED else name


def collect(config: NodeConfig, layout: dict[tuple[str, str], str]) -> ConfigFiles:
    """Every file the configuration references, and the pacsnode.toml that points to their backup copies.

    ``layout`` gives the backup's own names for the data (storage folder, index file) that an
    absolute setting is rewritten to.
    """
    result = ConfigFiles(files={CONFIG_NAME: config.home / CONFIG_NAME})
    rewrites: dict[tuple[str, str], str] = {}
    for (section, key), value in home_path_values(config).items():
        if not value:
            continue
        if (section, key) in layout:
            if PurePosixPath(value).is_absolute():
                rewrites[(section, key)] = layout[(section, key)]
            continue
        source = config.home / value
        if not source.is_file():
            continue  # an optional rule file that does not exist (load_config refuses missing TLS files)
        name = _inside(config.home, value)
        if name is None:
            name = f"{EXTERNAL}/{section}.{key}/{source.name}"
            rewrites[(section, key)] = name
        result.files[name] = source
    text = (config.home / CONFIG_NAME).read_text(encoding="utf-8")
    result.config_text = rewrite(text, rewrites) if rewrites else text
    result.rewritten = {f"[{s}].{k}": v for (s, k), v in rewrites.items()}
    return result


_HEADER = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")


def rewrite(text: str, changes: dict[tuple[str, str], str]) -> str:
    """``text`` with ``[section] key = "value"`` set for each change; verified by parsing it back."""
    lines = text.splitlines()
    section = ""
    done: set[tuple[str, str]] = set()
    for number, line in enumerate(lines):
        header = _HEADER.match(line)
        if header:
            section = header.group(1).strip()
            continue
        for (wanted, key), value in changes.items():
            if section == wanted and re.match(rf"^\s*{re.escape(key)}\s*=", line):
                lines[number] = f"{key} = {json.dumps(value)}  # rewritten by pacsnode backup (was outside the home)"
                done.add((wanted, key))
    result = "\n".join(lines) + "\n"
    try:
        parsed = tomllib.loads(result)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigCopyError(f"cannot rewrite {CONFIG_NAME} for the backup ({exc})") from None
    for (wanted, key), value in changes.items():
        if (wanted, key) not in done or parsed.get(wanted, {}).get(key) != value:
            raise ConfigCopyError(f"cannot rewrite [{wanted}].{key} in {CONFIG_NAME} for the backup; write it as "
                                  f"a plain `{key} = \"...\"` line under [{wanted}], or move the file into the home")
    return result


def write_new(path: Path, data: bytes) -> None:
    """Write a new file with mode 600 (patient data and secrets) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
