"""The font for preview labels: one that can draw Chinese, found through fontconfig.

Series descriptions in this region are often Chinese (GB18030 or UTF-8 in the files).
Pillow's built-in font has no CJK glyphs, so a label like ``胸部增强`` came out as empty
boxes. The node asks fontconfig for an installed font that covers Chinese
(``fc-list :lang=zh``; Debian's ``fonts-wqy-zenhei`` is what the Makefile installs) and
falls back to Pillow's font, with one warning per process naming the package to install,
when there is none.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

FC_LIST = "fc-list"
# Fonts we know draw Chinese well, best first; any other font fontconfig lists for zh comes after.
PREFERRED = ("wqy-zenhei", "notosanscjk", "notoserifcjk", "wqy-microhei", "droidsansfallback", "uming", "ukai")
INSTALL_HINT = "install one, e.g. `apt-get install fonts-wqy-zenhei fontconfig`"


@dataclass(frozen=True)
class FontChoice:
    """A font file and the face inside it (``.ttc`` collections hold several)."""

    path: str
    index: int = 0


def cjk_font() -> FontChoice | None:
    """The installed font to draw Chinese labels with, or None (warned about once)."""
    choice = _find_cjk_font()
    if choice is None:
        _warn_once()
    return choice


@lru_cache(maxsize=1)
def _find_cjk_font() -> FontChoice | None:
    fonts = fontconfig_fonts("zh")
    if not fonts:
        return None
    return min(fonts, key=_preference)


def fontconfig_fonts(lang: str) -> list[FontChoice]:
    """Every font face fontconfig says covers ``lang`` (empty without fontconfig)."""
    tool = shutil.which(FC_LIST)
    if tool is None:
        return []
    try:
        done = subprocess.run([tool, "-f", "%{file}\t%{index}\n", f":lang={lang}"], capture_output=True,
                              text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in done.stdout.splitlines():
        path, _, index = line.partition("\t")
        if path.lower().endswith((".ttf", ".ttc", ".otf", ".otc")):
            found.append(FontChoice(path, int(index) if index.strip().isdigit() else 0))
    return found


def _preference(font: FontChoice) -> tuple[int, str, int]:
    name = font.path.rsplit("/", 1)[-1].lower().replace("-", "").replace("_", "")
    rank = next((i for i, key in enumerate(PREFERRED) if key.replace("-", "") in name), len(PREFERRED))
    return rank, font.path, font.index


@lru_cache(maxsize=1)
def _warn_once() -> None:
    log.warning("no font with Chinese glyphs found through fontconfig (%s :lang=zh): preview labels "
                "use Pillow's built-in font and show Chinese as '?'; %s", FC_LIST, INSTALL_HINT)


def reset() -> None:
    """Forget the cached lookup and warning (tests, or after installing a font)."""
    _find_cjk_font.cache_clear()
    _warn_once.cache_clear()
