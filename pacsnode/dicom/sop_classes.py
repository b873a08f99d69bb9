"""Which SOP Classes are images: what recognition recognises and QC pixel-checks.

RECOGNITION.md: "For imaging, the images are what is recognised; the diagnostic conclusion
is not." A study holding only an SR or an encapsulated PDF has nothing to recognise for an
imaging item, so the index tells the rules which modalities a study has *images* of, and
QC picks the series it pixel-checks with the same list.
"""

from __future__ import annotations

SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."  # SR, key objects (KOS), CAD, dose reports
ENCAPSULATED_PREFIX = "1.2.840.10008.5.1.4.1.1.104."  # encapsulated PDF, CDA, STL ...
#: SOP Classes that are not images: presentation states, key objects, SR, encapsulated
#: documents, waveforms, raw data / registration / segmentation surfaces, RT objects other
#: than RT Image.
NON_IMAGE_PREFIXES: tuple[str, ...] = (
    SR_PREFIX, ENCAPSULATED_PREFIX,
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, spatial registration, segmentation surface
    "1.2.840.10008.5.1.4.1.1.481.",  # RT objects other than RT Image (481.1)
)
RT_IMAGE = "1.2.840.10008.5.1.4.1.1.481.1"


def is_image_sop_class(sop_class_uid: str) -> bool:
    """True unless the SOP Class is one of :data:`NON_IMAGE_PREFIXES` (RT Image is an image).

    An empty or unknown class counts as an image: the index only holds storage SOP classes,
    and a new image class must not be dropped from recognition for being new.
    """
    uid = (sop_class_uid or "").strip()
    if uid == RT_IMAGE:
        return True
    return not any(uid.startswith(prefix) for prefix in NON_IMAGE_PREFIXES)
