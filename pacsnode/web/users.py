"""The web side's name for the account service (``pacsnode.accounts``), kept for ``app.py``.

Accounts, sessions and the login throttle are a service (issue 13 item 7): the CLI, ``init``,
the admin pages and the login call ``pacsnode.accounts``. ``app.py`` (the DICOMweb door) still
reads sessions through this name; new code imports ``pacsnode.accounts``.
"""

from __future__ import annotations

from pacsnode.accounts import ROLES, SESSION_HOURS, digest, session_caller

__all__ = ["ROLES", "SESSION_HOURS", "digest", "session_caller"]
