"""Is an image lossy? The one answer, for the recognition rules and for QC alike.

RECOGNITION.md: a lossy copy is not HR-eligible ("if S.lossy ...: fail += incomplete"), and
QC warns about lossy images (``QC-LOSSY``). Both ask :func:`is_lossy`, so a study cannot be
"lossy" to one and "not lossy" to the other (issue 12 item 5).

The rule, from three facts of the instance:

1. **Transfer syntax** (PS3.5 8 and A.4). Lossy: JPEG baseline and extended (.50, .51 and
   the retired DCT processes .52-.56, .59-.64), JPEG-LS near-lossless (.81), JPEG 2000 (.91)
   and JPEG 2000 Part 2 (.93) "lossy allowed", HTJ2K (.203), JPIP referenced (.94, .95:
   the server decides the quality), MPEG-2/MPEG-4/HEVC video (.100-.108), JPEG XL
   recompressed JPEG (.111, a JPEG inside) and JPEG XL (.112). Not lossy: uncompressed,
   deflate, RLE, JPEG lossless (.57, .58, .65, .66, .70), JPEG-LS lossless (.80), JPEG 2000
   lossless only (.90, .92), HTJ2K lossless (.201, .202), JPEG XL lossless (.110).
2. **Lossy Image Compression (0028,2110)** = ``01``: the image was lossy compressed at some
   point in its life, even if it now travels uncompressed (a decompressed JPEG is still lossy).
3. **Lossy Image Compression Method (0028,2114)**: any value (ISO_10918_1, ISO_14495_1,
   ISO_15444_1, ISO_13818_2, ...) names a lossy compression that was applied.

Any one sign makes the image lossy; **nothing un-says it**. In particular a JPEG 2000 (.91)
image with (0028,2110) = ``00`` is lossy: .91 permits irreversible wavelets, the flag is
written by whoever encoded (and transcoders are known to copy the original's ``00``), and
the bytes cannot be checked without decoding the code-stream. A sender that knows its
JPEG 2000 is reversible has a syntax that says so: .90. Patient safety before convenience:
a lossless image wrongly called lossy costs a re-examination at worst; the reverse lets a
degraded image be recognised.
"""

from __future__ import annotations

import functools

#: Transfer syntaxes whose pixel data is (or may be) lossy compressed.
LOSSY_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    [f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 52, 53, 54, 55, 56, 59, 60, 61, 62, 63, 64)]  # JPEG DCT
    + ["1.2.840.10008.1.2.4.81"]  # JPEG-LS near-lossless
    + [f"1.2.840.10008.1.2.4.{n}" for n in (91, 93, 94, 95)]  # JPEG 2000 lossy allowed, JPIP
    + [f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)]  # MPEG-2, MPEG-4 AVC, HEVC
    + ["1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112"]  # JPEG XL: recompressed JPEG, lossy allowed
    + ["1.2.840.10008.1.2.4.203"]  # HTJ2K lossy allowed
)


@functools.lru_cache(maxsize=256)
def lossy_transfer_syntax(transfer_syntax: str) -> bool:
    """True for a transfer syntax of :data:`LOSSY_TRANSFER_SYNTAXES` (a fragmentable ``<uid>.1``
    variant, as MPEG-4 and HEVC define, counts as its parent). Cached: every store asks, and
    the prefix test walks the whole set."""
    uid = (transfer_syntax or "").strip().rstrip("\x00")
    return uid in LOSSY_TRANSFER_SYNTAXES or any(uid.startswith(lossy + ".") for lossy in LOSSY_TRANSFER_SYNTAXES)


def is_lossy(transfer_syntax: str, lossy_image_compression: str = "", method: str = "") -> bool:
    """The one answer: lossy when the transfer syntax, (0028,2110) = ``01`` or any (0028,2114)
    says so (see the module docstring for the rule and why ``00`` never overrides a lossy syntax).

    ``lossy_image_compression`` and ``method`` are the attributes' text values ("" when absent;
    a multi-valued method may be given joined with backslashes).
    """
    flag = (lossy_image_compression or "").strip().rstrip("\x00").strip()
    named = (method or "").replace("\\", "").strip().rstrip("\x00").strip()
    return flag == "01" or bool(named) or lossy_transfer_syntax(transfer_syntax)
