"""Preview labels draw Chinese with a CJK font found through fontconfig, and say so when none is.

The check that glyphs are drawn, not boxes: a font without a character draws its .notdef box
(or Pillow's fallback a '?'), the same picture for every missing character. So a label of
``王`` must differ from one of ``明`` and from one of a character no font has (U+10FFFD), while
two such missing characters give the same picture (which shows the comparison can tell).
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pacsnode.qc import fonts
from pacsnode.qc.preview import PreviewSeries, render_contact_sheet, tile_pixels
from support import PACSNODE, SAMPLE_DIR

NO_GLYPH = ("\U0010fffd", "\U0010fffc")  # private use, plane 16: in no font
needs_cjk_font = pytest.mark.skipif(not fonts.fontconfig_fonts("zh"),
                                    reason="no CJK font installed (make test installs fonts-wqy-zenhei)")


@pytest.fixture(autouse=True)
def fresh_lookup() -> None:
    fonts.reset()
    yield
    fonts.reset()


def gb18030_description(text: str) -> str:
    """A Series Description as pydicom decodes it from GB18030 bytes in a file."""
    ds = Dataset()
    ds.SpecificCharacterSet = "GB18030"
    ds.add(DataElement(0x0008103E, "LO", text.encode("gb18030")))
    ds.decode()
    return str(ds.SeriesDescription)


def label_picture(tmp_path: Path, description: str) -> np.ndarray:
    out = tmp_path / f"label-{ord(description[0]):x}.png"
    info = render_contact_sheet([PreviewSeries(1, description, "SR", 1, None)], out, tile=256)
    return tile_pixels(out, info.tiles[0])


@needs_cjk_font
def test_gb18030_label_draws_glyphs_not_boxes(tmp_path: Path) -> None:
    assert fonts.cjk_font() is not None
    wang, ming = gb18030_description("王王王"), gb18030_description("明明明")
    assert (wang, ming) == ("王王王", "明明明")
    missing = [label_picture(tmp_path, c * 3) for c in NO_GLYPH]
    assert np.array_equal(*missing), "two missing characters draw the same box"
    drawn_wang, drawn_ming = label_picture(tmp_path, wang), label_picture(tmp_path, ming)
    assert not np.array_equal(drawn_wang, missing[0]), "王 is drawn as the .notdef box"
    assert not np.array_equal(drawn_wang, drawn_ming), "distinct characters must draw differently"


@needs_cjk_font
def test_the_cjk_font_is_the_one_fontconfig_lists_for_chinese() -> None:
    choice = fonts.cjk_font()
    assert choice is not None
    listed = subprocess.run(["fc-list", "-f", "%{file}\n", ":lang=zh"], capture_output=True, text=True).stdout
    assert choice.path in listed.splitlines()


def test_without_a_cjk_font_the_preview_falls_back_with_one_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(fonts, "FC_LIST", "fc-list-not-installed")
    caplog.set_level(logging.WARNING, logger="pacsnode.qc.fonts")
    first = label_picture(tmp_path, "王王王")
    label_picture(tmp_path, "明明明")
    warnings = [r for r in caplog.records if r.name == "pacsnode.qc.fonts"]
    assert len(warnings) == 1 and "fonts-wqy-zenhei" in warnings[0].getMessage()
    assert first.std() > 0  # the sheet is still drawn


@needs_cjk_font
def test_cli_preview_of_a_gb18030_study_shows_the_characters(tmp_path: Path) -> None:
    """End to end: a GB18030 file imported, ``pacsnode qc preview`` draws its Chinese label."""
    template = next(p for p in sorted(SAMPLE_DIR.rglob("*.dcm")) if dcmread(p, stop_before_pixels=True)
                    .get("SpecificCharacterSet") == "GB18030")
    pictures = {}
    for description in ("王王王", "明明明", NO_GLYPH[0] * 3):
        ds = dcmread(template)
        ds.SeriesDescription = description
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        home, path = tmp_path / f"home{len(pictures)}", tmp_path / f"in{len(pictures)}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert description.encode("gb18030") in path.read_bytes()
        for args in (["init"], ["import", str(path)],
                     ["qc", "preview", ds.StudyInstanceUID, "-o", str(tmp_path / f"{len(pictures)}.png")]):
            done = subprocess.run([*PACSNODE, "--home", str(home), *args], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            assert "no font with Chinese glyphs" not in done.stderr
        with Image.open(tmp_path / f"{len(pictures)}.png") as sheet:
            pictures[description] = np.asarray(sheet.convert("L"))
    wang, ming, box = pictures.values()
    assert not np.array_equal(wang, box) and not np.array_equal(wang, ming)
