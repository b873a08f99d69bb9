"""The web side's name for the bearer-token service (``pacsnode.access_tokens``), kept for ``app.py``.

Tokens are a service (issue 13 item 7): the CLI and the admin pages call
``pacsnode.access_tokens``. ``app.py`` (the DICOMweb door) still turns a presented token into a
``Caller`` through this name; new code imports ``pacsnode.access_tokens``.
"""

from __future__ import annotations

from pacsnode.access_tokens import PERMISSIONS, caller_for

__all__ = ["PERMISSIONS", "caller_for"]
