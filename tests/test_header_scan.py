"""The one-pass header scan gives exactly the facts pydicom's full read gives.

Every sample file and every pydicom test file that the full read accepts is compared; a cut
file is never accepted by the fast path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pydicom.data

from pacsnode.dicom import header
from pacsnode.dicom.extract import facts_from_dataset, facts_from_scan, read_facts, read_header
from pacsnode.errors import InvalidInstance
from support import SAMPLE_DIR


def _candidates() -> list[Path]:
    files = sorted(SAMPLE_DIR.rglob("*.dcm"))
    bundled = Path(pydicom.data.__file__).parent / "test_files"  # shipped with pydicom: nothing downloaded
    files += sorted(bundled.rglob("*.dcm"))
    return files


def _full_read(path: Path):  # type: ignore[no-untyped-def]
    try:
        return facts_from_dataset(read_header(path))
    except InvalidInstance:
        return None


def test_the_fast_path_agrees_with_the_full_read_on_every_file_the_full_read_accepts() -> None:
    compared = 0
    for path in _candidates():
        expected = _full_read(path)
        if expected is None:
            continue
        assert read_facts(path) == expected, path
        scanned = header.scan(path)
        if scanned is not None and scanned.complete:
            assert facts_from_scan(scanned) == expected, path
            compared += 1
    assert compared > 100  # the fast path really was exercised


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_a_file_cut_short_is_never_taken_by_the_fast_path(tmp_path: Path, keep: float) -> None:
    source = next(p for p in sorted(SAMPLE_DIR.rglob("*.dcm")) if "CT" in p.parent.name)
    data = source.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: int(len(data) * keep)])
    scanned = header.scan(cut)
    assert scanned is None or not scanned.complete
    with pytest.raises(InvalidInstance):
        read_facts(cut)


def test_a_file_cut_inside_a_tag_is_never_taken_by_the_fast_path(tmp_path: Path) -> None:
    source = next(p for p in sorted(SAMPLE_DIR.rglob("*.dcm")) if "CT" in p.parent.name)
    data = source.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: data.index(b"\xe0\x7f\x10\x00") + 2])  # half of the Pixel Data tag
    scanned = header.scan(cut)
    assert scanned is None or not scanned.complete


def test_the_struct_walk_keeps_what_pydicoms_generator_keeps_and_is_the_path_taken() -> None:
    """``le_walk`` (issue 13: the generator was most of a small store's CPU) returns, for every
    little endian file it vouches for, the same indexed elements with the same bytes."""
    import io

    from pydicom.filereader import data_element_generator, read_preamble
    from pydicom.uid import UID

    from pacsnode.dicom import le_walk

    walked = little_endian = 0
    for path in _candidates():
        data = path.read_bytes()
        handle = io.BytesIO(data)
        try:
            read_preamble(handle, False)
            meta = list(data_element_generator(handle, False, True, stop_when=lambda tag, *_: tag.group != 2))
        except Exception:
            continue
        syntax = next((bytes(m.value).decode("ascii").strip("\x00 ") for m in meta if m.tag == 0x00020010), "")
        if not syntax or not UID(syntax).is_little_endian or UID(syntax).is_deflated:
            continue
        little_endian += 1
        start = handle.tell()
        try:
            ours = le_walk.top_level(data, start, UID(syntax).is_implicit_VR, header.TAGS)
        except le_walk.NotPlain:
            continue
        walked += 1
        theirs = {int(e.tag): e for e in data_element_generator(handle, UID(syntax).is_implicit_VR, True)
                  if int(e.tag) in header.TAGS}
        assert set(ours) == set(theirs), path
        for tag, element in theirs.items():
            if isinstance(element.value, bytes):
                assert ours[tag].value == element.value, (path, hex(tag))
    assert walked > 0.9 * little_endian, f"walked {walked} of {little_endian} little endian files"


def _generator_meta(path: Path) -> tuple[str, int]:
    """Transfer syntax and the offset after the meta group, as pydicom's generator reads them."""
    from pydicom.filereader import data_element_generator
    syntax = ""
    with open(path, "rb") as handle:
        handle.seek(132)
        for raw in data_element_generator(handle, False, True, stop_when=lambda tag, *_: tag.group != 2):
            if raw.tag == 0x00020010 and isinstance(raw.value, bytes):
                syntax = raw.value.decode("ascii", "replace").strip("\x00 ")
        return syntax, handle.tell()


def test_the_meta_group_struct_walk_reads_what_pydicoms_generator_reads_and_is_the_path_taken() -> None:
    """Issue 13: the File Meta group is walked with struct, ending where the generator ends."""
    walked = 0
    for path in _candidates():
        with open(path, "rb") as handle:
            if handle.read(132)[128:] != b"DICM":
                continue
            syntax = header._meta_syntax(handle)
            position = handle.tell()
        if syntax is None:
            continue  # unusual: the generator reads it (covered by the facts comparison above)
        assert (syntax, position) == _generator_meta(path), path
        walked += 1
    assert walked > 100  # the struct walk is the path taken for ordinary files


def test_a_meta_group_with_an_unknown_vr_goes_to_pydicom(tmp_path: Path) -> None:
    source = next(p for p in sorted(SAMPLE_DIR.rglob("*.dcm")) if "CT" in p.parent.name)
    data = bytearray(source.read_bytes())
    at = data.index(b"\x02\x00\x01\x00OB", 132)  # (0002,0001) File Meta Information Version
    data[at + 4:at + 6] = b"QQ"
    odd = tmp_path / "odd.dcm"
    odd.write_bytes(bytes(data))
    with open(odd, "rb") as handle:
        handle.seek(132)
        assert header._meta_syntax(handle) is None


CHARSETS = [[], ["ISO_IR 100"], ["ISO_IR 192"], ["ISO_IR 13"], ["GB18030"], ["ISO_IR 144"], ["ISO_IR 166"],
            ["ISO 2022 IR 6", "ISO 2022 IR 87"], ["ISO 2022 IR 13", "ISO 2022 IR 87"], ["ISO 2022 IR 6", "ISO 2022 IR 149"]]
ASCII_VALUES = [b"", b"BENCH^CT", b"Yamada^Tarou ", b"A\\B", b"^^^", b" lead", b"X\x00", b"x=y", b"A^B==", b"a~b|c{}",
                b"Doe^John^^Dr.", b"12345\\6789 "]


@pytest.mark.parametrize("charsets", CHARSETS, ids=lambda c: "+".join(c) or "default")
def test_seven_bit_values_decode_as_pydicom_decodes_them(charsets: list[str]) -> None:
    """``Values.text`` reads 7-bit values without ESC as ASCII (issue 13): the same text as pydicom's
    decoders in every character set, for PN and the other text VRs."""
    from pydicom.charset import convert_encodings, decode_bytes
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import BaseTag
    from pydicom.valuerep import PersonName

    encodings = convert_encodings(charsets or ["ISO_IR 6"])
    for keyword in ("PatientName", "PatientID", "StudyDescription"):
        tag = header.TAGS_BY_KEYWORD[keyword]
        vr = header.TAGS[tag][1]
        for value in ASCII_VALUES:
            if vr == "PN":
                expected = str(PersonName(value.rstrip(b"\x00 "), encodings)).strip()
            else:
                expected = decode_bytes(value, encodings, {0x5C} if len(encodings) > 1 else set()).strip("\x00 ")
            elements = {tag: RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True)}
            if charsets:
                named = "\\".join(charsets).encode()
                elements[0x00080005] = RawDataElement(BaseTag(0x00080005), "CS", len(named), named, 0, False, True)
            scanned = header.HeaderScan("1.2.840.10008.1.2.1", False, True, elements, True)
            assert header.Values(scanned).text(keyword) == expected, (keyword, value)


def _large_ct(tmp_path: Path) -> Path:
    """A CT of about 0.5 MB: its pixel data lies past the prefix the scan reads (header.SMALL_FILE)."""
    source = pydicom.dcmread(next(p for p in sorted(SAMPLE_DIR.rglob("*.dcm")) if "CT" in p.parent.name))
    source.Rows = source.Columns = 512
    source.BitsAllocated, source.BitsStored, source.HighBit, source.SamplesPerPixel = 16, 12, 11, 1
    source.PixelData = bytes(512 * 512 * 2)
    path = tmp_path / "large.dcm"
    source.save_as(path, enforce_file_format=True)
    assert path.stat().st_size > 4 * header.SMALL_FILE
    return path


@pytest.mark.parametrize("keep", [1.0, 0.5, 0.99])
def test_a_large_file_is_judged_from_its_first_bytes_as_from_the_whole(tmp_path: Path, keep: float) -> None:
    """Issue 13: the scan reads a large file's first bytes and skips the pixel data by its length;
    the facts are the full read's, and a file cut inside the pixel data is still refused."""
    path = _large_ct(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    scanned = header.scan(path)
    if keep == 1.0:
        assert scanned is not None and scanned.complete
        assert facts_from_scan(scanned) == facts_from_dataset(read_header(path))
    else:
        assert scanned is None or not scanned.complete
        with pytest.raises(InvalidInstance):
            read_facts(path)
