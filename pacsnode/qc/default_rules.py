"""The shipped QC rule set, as TOML text.

Kept in the package (not read from ``config/``) so an installed pacsnode has its default
rules without a repository checkout. ``config/qc_rules.toml`` is the same text, the copy an
administrator edits; ``tests/test_qc_rules.py`` fails when the two drift apart.
"""

DEFAULT_RULES_TOML = """\
# pacsnode quality-control rules.
#
# Loaded once at start by pacsnode.qc.rules.load_rules(); a bad value stops the node with
# an error naming the key and the fix. Severity is "fail" (the study cannot be accepted
# automatically and goes to needs-fix), "warn" (shown to the reviewer) or "off" (check
# not run). Raise `version` whenever you change a rule: every QC outcome records it, so a
# decision can always be traced to the rules in force.
version = "2026.1"

# Well-formed DA / TM / DT values (QC-FMT-DATE).
[dates]
severity = "fail"

# Identifying attributes (QC-ID-*). `any_of` lists keywords, "Sequence" (a non-empty
# item) or "Sequence.Keyword" (some item has the keyword); one of them must be present
# and non-empty. `scope = "images"` checks image instances only (reports and PDFs often
# lack equipment attributes). `consistent = true` also requires one value per study.
# `modalities` (optional) limits a rule to those modalities.
[[identity]]
code = "QC-ID-PATIENT-ID"
label = "Patient ID"
any_of = ["PatientID"]
consistent = true

[[identity]]
code = "QC-ID-ISSUER"
label = "Issuer of Patient ID"
any_of = ["IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence.UniversalEntityID"]
consistent = true

[[identity]]
code = "QC-ID-NAME"
label = "Patient name"
any_of = ["PatientName"]
consistent = true

[[identity]]
code = "QC-ID-SEX"
label = "Patient sex"
any_of = ["PatientSex"]
consistent = true

[[identity]]
code = "QC-ID-BIRTH-DATE"
label = "Patient birth date"
any_of = ["PatientBirthDate"]
consistent = true

[[identity]]
code = "QC-ID-STUDY-DATE"
label = "Study date"
any_of = ["StudyDate"]
consistent = true

[[identity]]
code = "QC-ID-STUDY-TIME"
label = "Study time"
any_of = ["StudyTime"]

[[identity]]
code = "QC-ID-ACCESSION"
label = "Accession number"
any_of = ["AccessionNumber"]
consistent = true

[[identity]]
code = "QC-ID-INSTITUTION"
label = "Institution"
any_of = ["InstitutionName", "InstitutionCodeSequence.CodeValue"]
scope = "images"

[[identity]]
code = "QC-ID-MODALITY"
label = "Modality"
any_of = ["Modality"]

[[identity]]
code = "QC-ID-BODY-PART"
label = "Body part"
any_of = ["BodyPartExamined", "ProcedureCodeSequence.CodeValue"]
scope = "images"

# Completeness of what arrived (QC-COUNT-GAP, QC-COUNT-DECLARED).
[counts]
gap = "fail"
declared = "fail"

# Pixel sanity on image series (QC-PIXEL-*, QC-LOSSY).
[pixels]
decode = "fail"
dims = "fail"
range = "fail"
lossy = "warn"
# Which images are lossy is decided in one place for QC and recognition alike
# (pacsnode/dicom/lossy.py: transfer syntax, Lossy Image Compression, its Method).

# Minimum [rows, columns] per modality; `default` for the others. These catch thumbnails,
# placeholders and truncated images, not diagnostic resolution (that is the reviewer's grade):
# real CT is 512x512 and a radiograph 2000+ pixels, while icons and thumbnails are 32-128.
[pixels.min_size]
default = [32, 32]
CT = [64, 64]
MR = [64, 64]
DX = [128, 128]
CR = [128, 128]
MG = [128, 128]
RF = [128, 128]
XA = [128, 128]
US = [64, 64]
NM = [32, 32]
PT = [32, 32]

# Radiation dose record (QC-DOSE): per modality, one of `any_of` in some instance of each
# image series, or a dose SR of one of `sr_classes` in the study.
[dose]
sr_classes = ["1.2.840.10008.5.1.4.1.1.88.67", "1.2.840.10008.5.1.4.1.1.88.76"]

[dose.CT]
severity = "fail"
any_of = ["CTDIvol"]

[dose.DX]
severity = "fail"
any_of = ["ImageAndFluoroscopyAreaDoseProduct", "EntranceDoseInmGy"]

# A CR plate reader rarely knows the exposure: a missing dose is a warning, not a failure.
[dose.CR]
severity = "warn"
any_of = ["ImageAndFluoroscopyAreaDoseProduct", "EntranceDoseInmGy"]

# A diagnostic report in the study (QC-REPORT): an SR whose SOP Class starts with one of
# `sop_class_prefixes` and is not excluded (key objects, dose and CAD SRs are not reports),
# or one of `sop_classes` (Encapsulated PDF).
[report]
severity = "warn"
required_for = ["CT", "MR"]
sop_classes = ["1.2.840.10008.5.1.4.1.1.104.1"]
sop_class_prefixes = ["1.2.840.10008.5.1.4.1.1.88."]
exclude_sop_classes = [
    "1.2.840.10008.5.1.4.1.1.88.40", "1.2.840.10008.5.1.4.1.1.88.50",
    "1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.5.1.4.1.1.88.65",
    "1.2.840.10008.5.1.4.1.1.88.67", "1.2.840.10008.5.1.4.1.1.88.68",
    "1.2.840.10008.5.1.4.1.1.88.69", "1.2.840.10008.5.1.4.1.1.88.71",
    "1.2.840.10008.5.1.4.1.1.88.73", "1.2.840.10008.5.1.4.1.1.88.74",
    "1.2.840.10008.5.1.4.1.1.88.75", "1.2.840.10008.5.1.4.1.1.88.76",
]
"""
