"""pacsnode's command line: importing the command modules registers them on ``main``."""

from pacsnode.cli import node_cmds, ops_cmds, peer_cmds, qc_cmds, qr_cmds, recognition_cmds, web_cmds  # noqa: F401  (registration)
from pacsnode.cli import status_cmds  # noqa: F401  (registration: pacsnode status)
from pacsnode.cli.app import main

__all__ = ["main"]
