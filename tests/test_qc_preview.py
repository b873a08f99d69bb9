"""The contact sheet: size, one tile per series, real content, correct display chain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pacsnode.qc.preview import (
    PreviewSeries,
    preview_series_for,
    render_contact_sheet,
    tile_pixels,
)
from pacsnode.qc.render import frame_view, render_instance
from pacsnode.qc.workflow import QcError
from qc_factory import (
    StudySpec,
    image,
    in_series,
    make_study,
    sample_copies,
    sample_study_dirs,
    set_jpeg_rgb,
    set_pixels,
    write,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_sheet_is_a_png_with_one_tile_per_series(tmp_path: Path) -> None:
    series = preview_series_for(make_study(tmp_path / "study"))
    assert [(s.series_number, s.modality, s.instance_count) for s in series] == [
        (1, "CT", 3), (2, "CT", 3), (100, "SR", 1)]
    assert series[2].middle_instance_path is None

    out = tmp_path / "sheet.png"
    info = render_contact_sheet(series, out, tile=200)
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(out) as sheet:
        assert sheet.format == "PNG" and sheet.size == (400, 400) == (info.width, info.height)
    assert [t.kind for t in info.tiles] == ["image", "image", "placeholder"]
    assert [t.box for t in info.tiles] == [(0, 0, 200, 200), (200, 0, 400, 200), (0, 200, 200, 400)]
    for tile in info.tiles[:2]:
        assert tile_pixels(out, tile).std() > 20  # a real image, not a flat tile


@pytest.mark.parametrize(("count", "tile", "size"), [(1, 128, (128, 128)), (2, 100, (200, 100)),
                                                     (5, 100, (300, 200)), (10, 64, (256, 192))])
def test_grid_has_ceil_sqrt_columns(tmp_path: Path, count: int, tile: int, size: tuple[int, int]) -> None:
    series = [PreviewSeries(n, f"Series {n}", "SR", 1, None) for n in range(1, count + 1)]
    info = render_contact_sheet(series, tmp_path / "grid.png", tile=tile)
    assert (info.width, info.height) == size and len(info.tiles) == count
    with Image.open(tmp_path / "grid.png") as sheet:
        assert sheet.size == size


def test_placeholder_tile_is_grey(tmp_path: Path) -> None:
    info = render_contact_sheet([PreviewSeries(100, "Report", "SR", 1, None)], tmp_path / "sr.png")
    corner = tile_pixels(tmp_path / "sr.png", info.tiles[0])[:20, :20]
    assert np.all(corner == corner[0, 0]) and 60 < corner[0, 0, 0] < 200


def _single(tmp_path: Path, name: str, ds: Dataset) -> str:
    return str(write([ds], tmp_path / name)[0])


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = (np.arange(64 * 64).reshape(64, 64) % 997).astype(np.uint16)
    normal = image("DX", 1, 1, 1, size=64)
    set_pixels(normal, pixels, "MONOCHROME2")
    inverted = image("DX", 1, 2, 1, size=64)
    set_pixels(inverted, pixels, "MONOCHROME1")
    a = np.asarray(render_instance(_single(tmp_path, "m2", normal)), dtype=int)
    b = np.asarray(render_instance(_single(tmp_path, "m1", inverted)), dtype=int)
    assert a.std() > 50
    assert np.all(a + b == 255)
    series = [PreviewSeries(1, "M2", "DX", 1, _single(tmp_path, "m2b", normal)),
              PreviewSeries(2, "M1", "DX", 1, _single(tmp_path, "m1b", inverted))]
    info = render_contact_sheet(series, tmp_path / "sheet.png", tile=128)
    left, right = (tile_pixels(tmp_path / "sheet.png", t).astype(int) for t in info.tiles)
    assert np.abs(left + right - 255).max() <= 3  # bilinear resampling rounds each side


def test_window_from_the_header_is_applied(tmp_path: Path) -> None:
    ds = image("CT", 1, 1, 1, size=64)  # ramp -1000..1000 HU, window 40/400
    rendered = np.asarray(render_instance(_single(tmp_path, "ct", ds)))
    hu = ds.pixel_array.astype(float)
    assert np.all(rendered[hu < -160] == 0) and np.all(rendered[hu > 240] == 255)
    middle = (hu > 30) & (hu < 50)
    assert np.all(np.abs(rendered[middle].astype(int) - 128) < 12)


def test_without_window_min_max_is_used(tmp_path: Path) -> None:
    ds = image("CT", 1, 1, 1, size=64)
    del ds.WindowCenter, ds.WindowWidth
    rendered = np.asarray(render_instance(_single(tmp_path, "ct", ds)))
    assert rendered.min() == 0 and rendered.max() == 255


def test_rescale_is_applied_before_the_window(tmp_path: Path) -> None:
    ds = image("CT", 1, 1, 1, size=64)
    set_pixels(ds, (np.array(ds.pixel_array, dtype=np.int32) + 1024).astype(np.uint16))
    ds.RescaleIntercept = "-1024"
    rendered = np.asarray(render_instance(_single(tmp_path, "ct", ds)))
    reference = np.asarray(render_instance(_single(tmp_path, "ref", image("CT", 1, 2, 1, size=64))))
    assert np.abs(rendered.astype(int) - reference.astype(int)).max() <= 1


def test_ybr_jpeg_is_shown_in_true_colour(tmp_path: Path) -> None:
    ds = image("CT", 1, 1, 1, size=64)
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, :32] = (220, 20, 20)
    rgb[:, 32:] = (20, 20, 220)
    set_jpeg_rgb(ds, rgb)
    rendered = np.asarray(render_instance(_single(tmp_path, "jpeg", ds)))
    assert rendered.shape == (64, 64, 3)
    assert np.abs(rendered[10:54, 4:28].astype(int) - (220, 20, 20)).max() < 30
    assert np.abs(rendered[10:54, 36:60].astype(int) - (20, 20, 220)).max() < 30


def test_multiframe_shows_the_middle_frame(tmp_path: Path) -> None:
    ds = image("CT", 1, 1, 1, size=64)
    frames = np.zeros((3, 64, 64), np.int16)
    frames[1] = ds.pixel_array
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    rendered = np.asarray(render_instance(_single(tmp_path, "mf", ds)))
    assert rendered.std() > 50


def test_enhanced_window_is_taken_from_functional_groups() -> None:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = "40", "400"
    rescale = Dataset()
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = "1", "-1024", "HU"
    group = Dataset()
    group.FrameVOILUTSequence = Sequence([voi])
    group.PixelValueTransformationSequence = Sequence([rescale])
    ds.SharedFunctionalGroupsSequence = Sequence([group])
    view = frame_view(ds, 0)
    assert (float(view.WindowCenter), float(view.RescaleIntercept)) == (40.0, -1024.0)


def test_undisplayable_image_gets_an_error_tile_and_the_sheet_is_written(tmp_path: Path) -> None:
    instances = make_study(tmp_path / "study", StudySpec(series_sizes=(1, 1), with_report=False),
                           mutate=lambda ds: setattr(ds, "PixelData", ds.PixelData[:10]), only=in_series(2))
    info = render_contact_sheet(preview_series_for(instances), tmp_path / "sheet.png")
    assert [t.kind for t in info.tiles] == ["image", "error"]
    assert info.tiles[1].message
    assert (tmp_path / "sheet.png").exists()


def test_nothing_to_preview_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(QcError):
        render_contact_sheet([], tmp_path / "x.png")


def test_chinese_description_does_not_break_the_label(tmp_path: Path) -> None:
    info = render_contact_sheet([PreviewSeries(1, "胸部平扫 5mm", "SR", 1, None)], tmp_path / "zh.png")
    assert len(info.tiles) == 1


SAMPLES = sample_study_dirs()


@pytest.mark.skipif(not SAMPLES, reason="sample_dicom/ not generated")
def test_every_sample_study_renders_with_content(tmp_path: Path) -> None:
    for number, study_dir in enumerate(SAMPLES):
        series = preview_series_for(sample_copies(study_dir, tmp_path / str(number)))
        info = render_contact_sheet(series, tmp_path / f"{number}.png", tile=128)
        for tile in info.tiles:
            assert tile.kind in ("image", "placeholder"), (study_dir, tile)
            if tile.kind == "image":
                assert tile_pixels(tmp_path / f"{number}.png", tile).std() > 5, study_dir
