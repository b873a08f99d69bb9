"""``[log] format = "json"``: one JSON object per line, for log collectors.

Why a formatter of our own and not a dependency: the standard library has everything (a
record's fields and ``json.dumps``), and the output must keep the text format's safety: the
message is a JSON string, so a newline or an escape sequence a peer put in an AE title or a
patient name cannot forge a second log line or drive a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "process"[, "exception"]}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: int, fmt: str) -> None:
    """Set the root handler's format for ``serve`` (``text`` or ``json``)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=TEXT_FORMAT)
    root.setLevel(level)
    if fmt == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())


def status(message: str, fmt: str) -> None:
    """A line ``serve`` always shows (listening, shutting down), in the configured format:
    with ``json``, every line on stderr is one JSON object, these too."""
    if fmt == "json":
        record = logging.LogRecord("pacsnode.serve", logging.INFO, __file__, 0, message, None, None)
        sys.stderr.write(JsonFormatter().format(record) + "\n")
    else:
        sys.stderr.write(message + "\n")
    sys.stderr.flush()
