"""A contact sheet of a study: one labelled tile per series, for the QC reviewer.

A reviewer grading a study first needs to see it: is every series there, is the chest
radiograph a chest, is the CT windowed into something readable. One PNG with the middle
image of each series answers that without a viewer. Pixels go through pydicom's own
decoders and LUT functions (modality LUT, VOI LUT/window, colour conversion) and Pillow
draws the sheet; no codec or LUT arithmetic is written here.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pacsnode.qc.fonts import cjk_font
from pacsnode.qc.render import RenderError, render_instance
from pacsnode.qc.study import QcInstance, build_study
from pacsnode.qc.workflow import QcError

TileKind = Literal["image", "placeholder", "error"]
FontType = ImageFont.ImageFont | ImageFont.FreeTypeFont | ImageFont.TransposedFont

BACKGROUND = (0, 0, 0)
PLACEHOLDER_GREY = (96, 96, 96)
ERROR_GREY = (110, 60, 60)
LABEL_BAND = (24, 24, 24)
LABEL_TEXT = (255, 255, 160)
NON_IMAGE_TITLES: dict[str, str] = {
    "SR": "Structured report", "DOC": "PDF document", "KO": "Key images",
    "PR": "Presentation state", "RTSTRUCT": "RT structures", "ECG": "Waveform",
}


@dataclass(frozen=True)
class PreviewSeries:
    """One series to show; ``middle_instance_path`` is None for non-image series."""

    series_number: int | None
    description: str
    modality: str
    instance_count: int
    middle_instance_path: str | None


@dataclass(frozen=True)
class PreviewTile:
    """Where one series landed on the sheet.

    ``box`` is the whole cell (left, top, right, bottom; right/bottom exclusive) and
    ``image_box`` the part holding pixels (empty for placeholders and errors).
    """

    series_number: int | None
    kind: TileKind
    box: tuple[int, int, int, int]
    image_box: tuple[int, int, int, int] | None = None
    message: str = ""


@dataclass(frozen=True)
class PreviewInfo:
    """Size of the written PNG and one tile per series, in the order given."""

    width: int
    height: int
    tiles: tuple[PreviewTile, ...]


def preview_series_for(instances: Sequence[QcInstance]) -> list[PreviewSeries]:
    """Build the series list of a contact sheet from the headers of one study."""
    study = build_study(instances)
    return [PreviewSeries(series_number=s.number, description=s.description, modality=s.modality,
                          instance_count=len(s.instances),
                          middle_instance_path=s.middle().path if s.is_image else None)
            for s in study.series]


def render_contact_sheet(series: Sequence[PreviewSeries], out_path: str | Path, tile: int = 256,
                         font_path: str | None = None) -> PreviewInfo:
    """Write a PNG grid (``ceil(sqrt(n))`` columns) with one ``tile``-pixel square per series.

    A series whose image cannot be displayed gets an error tile instead of failing the
    sheet: the reviewer still sees the rest. ``font_path`` names a TrueType font for the
    labels; by default a font that draws Chinese, found through fontconfig
    (:mod:`pacsnode.qc.fonts`), else Pillow's built-in font with a warning.
    The file is written atomically (temporary file, then rename).
    """
    if not series:
        raise QcError("no series to preview")
    if tile < 48:
        raise QcError(f"tile size {tile} is too small to label; use 48 pixels or more")
    columns = math.ceil(math.sqrt(len(series)))
    rows = math.ceil(len(series) / columns)
    sheet = Image.new("RGB", (columns * tile, rows * tile), BACKGROUND)
    font = _font(font_path, size=max(9, tile // 22))
    tiles = []
    for position, item in enumerate(series):
        left, top = (position % columns) * tile, (position // columns) * tile
        tiles.append(_draw_tile(sheet, item, (left, top, left + tile, top + tile), font))
    _save_png(sheet, Path(out_path))
    return PreviewInfo(width=sheet.width, height=sheet.height, tiles=tuple(tiles))


def _draw_tile(sheet: Image.Image, item: PreviewSeries, box: tuple[int, int, int, int],
               font: FontType) -> PreviewTile:
    left, top, right, bottom = box
    band = _label_height(font)
    area = (left, top, right, bottom - band)
    if item.middle_instance_path is None:
        title = NON_IMAGE_TITLES.get(item.modality.upper(), "No image")
        _fill_with_text(sheet, area, PLACEHOLDER_GREY, [title, item.modality], font)
        result = PreviewTile(item.series_number, "placeholder", box, message=title)
    else:
        try:
            image = render_instance(item.middle_instance_path)
            image_box = _paste_fitted(sheet, image, area)
            result = PreviewTile(item.series_number, "image", box, image_box=image_box)
        except RenderError as exc:
            _fill_with_text(sheet, area, ERROR_GREY, ["Cannot display", str(exc)[:60]], font)
            result = PreviewTile(item.series_number, "error", box, message=str(exc))
    _draw_label(sheet, item, (left, bottom - band, right, bottom), font)
    return result


def _paste_fitted(sheet: Image.Image, image: Image.Image,
                  area: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Scale ``image`` to fit ``area`` keeping its aspect ratio; centre it; return its box."""
    left, top, right, bottom = area
    width, height = right - left, bottom - top
    scale = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resized = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    x, y = left + (width - size[0]) // 2, top + (height - size[1]) // 2
    sheet.paste(resized, (x, y))
    return (x, y, x + size[0], y + size[1])


def _fill_with_text(sheet: Image.Image, area: tuple[int, int, int, int], colour: tuple[int, int, int],
                    lines: list[str], font: FontType) -> None:
    draw = ImageDraw.Draw(sheet)
    draw.rectangle((area[0], area[1], area[2] - 1, area[3] - 1), fill=colour)
    line_height = _line_height(font)
    y = (area[1] + area[3]) // 2 - line_height * len(lines) // 2
    for line in lines:
        text = _fit(draw, _printable(line, font), font, area[2] - area[0] - 8)
        x = (area[0] + area[2] - _text_width(draw, text, font)) // 2
        draw.text((x, y), text, fill=(235, 235, 235), font=font)
        y += line_height


def _draw_label(sheet: Image.Image, item: PreviewSeries, band: tuple[int, int, int, int],
                font: FontType) -> None:
    """Two lines: "#3 CT, 120 images" and the series description."""
    draw = ImageDraw.Draw(sheet)
    draw.rectangle((band[0], band[1], band[2] - 1, band[3] - 1), fill=LABEL_BAND)
    number = f"#{item.series_number}" if item.series_number is not None else "#?"
    plural = "image" if item.instance_count == 1 else "images"
    first = f"{number} {item.modality or '??'}, {item.instance_count} {plural}"
    limit = band[2] - band[0] - 8
    draw.text((band[0] + 4, band[1] + 2), _fit(draw, first, font, limit), fill=LABEL_TEXT, font=font)
    description = _fit(draw, _printable(item.description, font), font, limit)
    draw.text((band[0] + 4, band[1] + 2 + _line_height(font)), description, fill=LABEL_TEXT, font=font)


def _font(font_path: str | None, size: int) -> FontType:
    """The label font: ``font_path`` when given, else the installed CJK font, else Pillow's."""
    if font_path:
        try:
            return ImageFont.truetype(font_path, size)
        except OSError as exc:
            raise QcError(f"cannot load label font {font_path}: {exc}") from exc
    choice = cjk_font()
    if choice is not None:
        try:
            return ImageFont.truetype(choice.path, size, index=choice.index)
        except OSError:
            pass  # a broken font file must not stop the preview: fall back below
    return ImageFont.load_default(size=size)


def _printable(text: str, font: FontType) -> str:
    """Pillow's bitmap fallback font only knows Latin-1; keep other fonts' text as is."""
    if isinstance(font, ImageFont.FreeTypeFont):
        return text
    return text.encode("latin-1", "replace").decode("latin-1")


def _line_height(font: FontType) -> int:
    left, top, right, bottom = font.getbbox("Ag#")
    return int(bottom - min(top, 0)) + 3


def _label_height(font: FontType) -> int:
    return 2 * _line_height(font) + 4


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: FontType) -> int:
    return int(draw.textlength(text, font=font)) if text else 0


def _fit(draw: ImageDraw.ImageDraw, text: str, font: FontType, width: int) -> str:
    """Cut ``text`` with an ellipsis so it fits ``width`` pixels."""
    if _text_width(draw, text, font) <= width:
        return text
    while text and _text_width(draw, text + "...", font) > width:
        text = text[:-1]
    return text + "..."


def _save_png(sheet: Image.Image, out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".preview-", suffix=".png", dir=out_path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            sheet.save(stream, format="PNG")
        os.replace(temporary, out_path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def tile_pixels(path: str | Path, tile: PreviewTile) -> np.ndarray:
    """The pixels of one tile's image area from a written sheet (for tests and tools)."""
    box = tile.image_box or tile.box
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").crop(box))
