"""The rule files pacsnode ships: the region's recognition rules and the QC rule set.

They are package data, read with :mod:`importlib.resources`, so a node installed from a
wheel (``pip install pacsnode``, no checkout) gets the same defaults as one run from the
repository. ``config/`` in the repository is the one source: the files here are symbolic
links to it in the checkout, and the wheel carries their content
(``tests/test_packaging.py`` checks both, and that an installed wheel serves the rules).
"""

from __future__ import annotations

from importlib import resources

RULE_FILES = ("recognition.toml", "qc_rules.toml")


def default_text(name: str) -> str:
    """The shipped text of one rule file (``recognition.toml`` or ``qc_rules.toml``)."""
    if name not in RULE_FILES:
        raise ValueError(f"no shipped rule file named {name!r} (known: {', '.join(RULE_FILES)})")
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
