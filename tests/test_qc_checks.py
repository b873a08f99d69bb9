"""Each QC check against a study made to pass it and one made to fail it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLSLossless

from pacsnode.errors import InvalidInstance
from pacsnode.qc.checks import CHECK_CODES, CheckOutcome, QcInstance, failed, run_checks
from pacsnode.qc.rules import default_rules
from pacsnode.qc.workflow import QcError
from qc_factory import (
    ENCAPSULATED_PDF,
    XRAY_DOSE_SR,
    StudySpec,
    add_item,
    first_of_series,
    in_series,
    make_study,
    report,
    sample_copies,
    sample_study_dirs,
    set_jpeg_rgb,
    set_pixels,
)

RULES = default_rules()


def outcomes_for(instances: list[QcInstance], code: str) -> list[CheckOutcome]:
    return [o for o in run_checks(instances, RULES) if o.code == code]


def only_outcome(instances: list[QcInstance], code: str) -> CheckOutcome:
    found = outcomes_for(instances, code)
    assert len(found) == 1, found
    return found[0]


def test_the_reference_study_passes_every_check(tmp_path: Path) -> None:
    outcomes = run_checks(make_study(tmp_path), RULES)
    assert failed(outcomes) == []
    codes = {o.code for o in outcomes}
    # Everything applies to a CT study with a report, except the declared counts (none declared).
    assert codes == set(CHECK_CODES) - {"QC-COUNT-DECLARED"}


def test_outcome_codes_are_all_documented(tmp_path: Path) -> None:
    outcomes = run_checks(make_study(tmp_path), RULES)
    assert {o.code for o in outcomes} <= set(CHECK_CODES)
    assert all(o.severity in ("fail", "warn") for o in outcomes)


# --- identification -------------------------------------------------------------------

def _delete(keyword: str) -> Callable[[Dataset], None]:
    def mutate(ds: Dataset) -> None:
        if keyword in ds:
            delattr(ds, keyword)
    return mutate


@pytest.mark.parametrize(("code", "keyword"), [
    ("QC-ID-PATIENT-ID", "PatientID"),
    ("QC-ID-ISSUER", "IssuerOfPatientID"),
    ("QC-ID-NAME", "PatientName"),
    ("QC-ID-SEX", "PatientSex"),
    ("QC-ID-BIRTH-DATE", "PatientBirthDate"),
    ("QC-ID-STUDY-DATE", "StudyDate"),
    ("QC-ID-STUDY-TIME", "StudyTime"),
    ("QC-ID-ACCESSION", "AccessionNumber"),
    ("QC-ID-INSTITUTION", "InstitutionName"),
    ("QC-ID-MODALITY", "Modality"),
    ("QC-ID-BODY-PART", "BodyPartExamined"),
])
def test_identity_attribute_missing_fails(tmp_path: Path, code: str, keyword: str) -> None:
    assert only_outcome(make_study(tmp_path / "ok"), code).passed
    broken = make_study(tmp_path / "bad", mutate=_delete(keyword), only=in_series(2))
    outcome = only_outcome(broken, code)
    assert not outcome.passed and outcome.severity == "fail"
    assert "missing in series 2" in outcome.message


def test_empty_person_name_counts_as_missing(tmp_path: Path) -> None:
    broken = make_study(tmp_path, mutate=lambda ds: setattr(ds, "PatientName", "^^"))
    assert not only_outcome(broken, "QC-ID-NAME").passed


def test_alternatives_satisfy_identity_rules(tmp_path: Path) -> None:
    def use_codes(ds: Dataset) -> None:
        del ds.IssuerOfPatientID
        add_item(ds, "IssuerOfPatientIDQualifiersSequence", UniversalEntityID="CTY001")
        if "InstitutionName" in ds:
            del ds.InstitutionName
        add_item(ds, "InstitutionCodeSequence", CodeValue="CTY001", CodingSchemeDesignator="CN-INST")
        if "BodyPartExamined" in ds:
            del ds.BodyPartExamined
        add_item(ds, "ProcedureCodeSequence", CodeValue="CT-CHEST-PLAIN", CodingSchemeDesignator="CN-HR")

    instances = make_study(tmp_path, mutate=use_codes)
    for code in ("QC-ID-ISSUER", "QC-ID-INSTITUTION", "QC-ID-BODY-PART"):
        assert only_outcome(instances, code).passed, code


def test_report_without_body_part_or_institution_is_fine(tmp_path: Path) -> None:
    # The SR of the reference study has neither; the rules check those on images only.
    instances = make_study(tmp_path)
    assert only_outcome(instances, "QC-ID-BODY-PART").passed
    assert only_outcome(instances, "QC-ID-INSTITUTION").passed


def test_patient_id_differing_between_series_fails(tmp_path: Path) -> None:
    broken = make_study(tmp_path, mutate=lambda ds: setattr(ds, "PatientID", "OTHER"), only=in_series(2))
    outcome = only_outcome(broken, "QC-ID-PATIENT-ID")
    assert not outcome.passed
    assert "not the same in every series" in outcome.message and "series 2" in outcome.message
    assert "OTHER" not in outcome.message  # identifiers never go into messages


def test_invalid_sex_code_fails(tmp_path: Path) -> None:
    broken = make_study(tmp_path, mutate=lambda ds: setattr(ds, "PatientSex", "X"))
    outcome = only_outcome(broken, "QC-ID-SEX")
    assert not outcome.passed and "M, F or O" in outcome.message


def test_birth_date_after_study_date_fails(tmp_path: Path) -> None:
    broken = make_study(tmp_path, mutate=lambda ds: setattr(ds, "PatientBirthDate", "20270101"))
    outcome = only_outcome(broken, "QC-ID-BIRTH-DATE")
    assert not outcome.passed and "after the study date" in outcome.message


# --- date format ----------------------------------------------------------------------

@pytest.mark.parametrize(("keyword", "value"), [
    ("StudyDate", "2026-11-10"),
    ("StudyDate", "20260230"),
    ("StudyTime", "25"),
    ("StudyTime", "10:30"),
    ("AcquisitionDateTime", "20261310120000"),
])
def test_malformed_dates_and_times_fail(tmp_path: Path, keyword: str, value: str) -> None:
    broken = make_study(tmp_path, mutate=lambda ds: setattr(ds, keyword, value), only=first_of_series(1))
    outcome = only_outcome(broken, "QC-FMT-DATE")
    assert not outcome.passed and outcome.severity == "fail"
    assert repr(value) in outcome.message and "series 1" in outcome.message


@pytest.mark.parametrize(("keyword", "value"), [
    ("StudyTime", "0930"), ("StudyTime", "093000.123456"), ("StudyTime", "235960"),
    ("AcquisitionDateTime", "20261110093000.5+0800"), ("ContentDate", "20240229"),
])
def test_well_formed_dates_and_times_pass(tmp_path: Path, keyword: str, value: str) -> None:
    instances = make_study(tmp_path, mutate=lambda ds: setattr(ds, keyword, value))
    assert only_outcome(instances, "QC-FMT-DATE").passed


# --- counts ---------------------------------------------------------------------------

def test_instance_number_gap_and_duplicate_are_named(tmp_path: Path) -> None:
    spec = StudySpec(series_sizes=(3, 7))

    def renumber(ds: Dataset) -> None:
        ds.InstanceNumber = {4: 5, 7: 8}.get(int(ds.InstanceNumber), int(ds.InstanceNumber))

    broken = make_study(tmp_path / "bad", spec, mutate=renumber, only=in_series(2))
    outcomes = outcomes_for(broken, "QC-COUNT-GAP")
    assert len(outcomes) == 2  # one per image series
    by_series = {o.series_uid.rsplit(".", 1)[-1]: o for o in outcomes}
    assert by_series["1"].passed
    bad = by_series["2"]
    assert not bad.passed and bad.severity == "fail"
    assert bad.message == "Series 2 is missing instance numbers 4 and 7 and has instance number 5 more than once."


def test_long_runs_of_missing_numbers_are_ranges(tmp_path: Path) -> None:
    broken = make_study(tmp_path, StudySpec(series_sizes=(2,)),
                        mutate=lambda ds: setattr(ds, "InstanceNumber", 1 if ds.InstanceNumber == 1 else 9))
    outcome = only_outcome(broken, "QC-COUNT-GAP")
    assert outcome.message == "Series 1 is missing instance numbers 2-8."


def test_declared_count_larger_than_arrived_fails(tmp_path: Path) -> None:
    ok = make_study(tmp_path / "ok", mutate=lambda ds: setattr(ds, "ImagesInAcquisition", 3),
                    only=lambda ds: ds.Modality == "CT")
    assert only_outcome(ok, "QC-COUNT-DECLARED").passed
    broken = make_study(tmp_path / "bad", mutate=lambda ds: setattr(ds, "ImagesInAcquisition", 5),
                        only=in_series(2))
    outcome = only_outcome(broken, "QC-COUNT-DECLARED")
    assert not outcome.passed
    assert "Series 2 declares 5 images but 3 arrived" in outcome.message


def test_declared_study_instances_fail_when_short(tmp_path: Path) -> None:
    broken = make_study(tmp_path, mutate=lambda ds: setattr(ds, "NumberOfStudyRelatedInstances", 9))
    outcome = only_outcome(broken, "QC-COUNT-DECLARED")
    assert not outcome.passed and "declares 9 instances but 7 arrived" in outcome.message


def test_nothing_declared_gives_no_outcome(tmp_path: Path) -> None:
    assert outcomes_for(make_study(tmp_path), "QC-COUNT-DECLARED") == []


# --- pixels ---------------------------------------------------------------------------

def test_truncated_pixel_data_fails_decode(tmp_path: Path) -> None:
    def truncate(ds: Dataset) -> None:
        ds.PixelData = ds.PixelData[:100]

    broken = make_study(tmp_path, mutate=truncate, only=in_series(2))
    outcomes = {o.series_uid.rsplit(".", 1)[-1]: o for o in outcomes_for(broken, "QC-PIXEL-DECODE")}
    assert outcomes["1"].passed
    assert not outcomes["2"].passed and outcomes["2"].severity == "fail"
    assert outcomes["2"].message.startswith("Series 2, image 2: the pixel data cannot be decoded")
    # No range verdict on pixels that could not be read.
    assert [o.series_uid for o in outcomes_for(broken, "QC-PIXEL-RANGE")] == [outcomes["1"].series_uid]


def test_missing_decoder_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")

    def to_jpeg_ls(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not decodable here \xff\xd9"])
        ds["PixelData"].VR = "OB"

    instances = make_study(tmp_path, StudySpec(series_sizes=(1,)), mutate=to_jpeg_ls,
                           only=lambda ds: ds.Modality == "CT")
    outcome = only_outcome(instances, "QC-PIXEL-DECODE")
    assert not outcome.passed and outcome.severity == "warn"
    assert "no decoder" in outcome.message


def test_small_images_fail_dims(tmp_path: Path) -> None:
    broken = make_study(tmp_path, StudySpec(series_sizes=(2,), size=32))
    outcome = only_outcome(broken, "QC-PIXEL-DIMS")
    assert not outcome.passed
    assert outcome.message == "Series 1: image 1 and image 2 are too small (32x32; CT needs at least 64x64)."


def test_blank_image_fails_range(tmp_path: Path) -> None:
    broken = make_study(tmp_path, mutate=lambda ds: set_pixels(ds, np.zeros((64, 64), np.int16)),
                        only=in_series(1))
    outcomes = {o.series_uid.rsplit(".", 1)[-1]: o for o in outcomes_for(broken, "QC-PIXEL-RANGE")}
    assert outcomes["2"].passed
    assert not outcomes["1"].passed and outcomes["1"].severity == "fail"
    assert outcomes["1"].message == "Series 1, image 2 is blank: every pixel has the value 0."


def test_lossy_flag_warns(tmp_path: Path) -> None:
    broken = make_study(tmp_path, mutate=lambda ds: setattr(ds, "LossyImageCompression", "01"),
                        only=first_of_series(2))
    outcomes = {o.series_uid.rsplit(".", 1)[-1]: o for o in outcomes_for(broken, "QC-LOSSY")}
    assert outcomes["1"].passed
    assert not outcomes["2"].passed and outcomes["2"].severity == "warn"
    assert "1 of 3 images were lossy compressed" in outcomes["2"].message


def test_lossy_transfer_syntax_warns_and_jpeg_decodes(tmp_path: Path) -> None:
    def to_jpeg(ds: Dataset) -> None:
        rgb = np.zeros((64, 64, 3), np.uint8)
        rgb[:, :32] = (200, 30, 30)
        set_jpeg_rgb(ds, rgb)
        del ds.LossyImageCompression  # the transfer syntax alone must be enough

    instances = make_study(tmp_path, StudySpec(series_sizes=(1,)), mutate=to_jpeg,
                           only=lambda ds: ds.Modality == "CT")
    assert not only_outcome(instances, "QC-LOSSY").passed
    assert only_outcome(instances, "QC-PIXEL-DECODE").passed
    assert only_outcome(instances, "QC-PIXEL-RANGE").passed


def test_report_series_are_not_pixel_checked(tmp_path: Path) -> None:
    instances = make_study(tmp_path)
    sr_series = next(i.header.SeriesInstanceUID for i in instances if i.header.Modality == "SR")
    for code in ("QC-PIXEL-DECODE", "QC-PIXEL-DIMS", "QC-PIXEL-RANGE", "QC-LOSSY", "QC-COUNT-GAP"):
        assert all(o.series_uid != sr_series for o in outcomes_for(instances, code)), code


# --- dose and report --------------------------------------------------------------------

def test_ct_without_dose_fails_and_a_dose_sr_fixes_it(tmp_path: Path) -> None:
    broken = make_study(tmp_path / "bad", mutate=_delete("CTDIvol"))
    outcome = only_outcome(broken, "QC-DOSE")
    assert not outcome.passed and outcome.severity == "fail"
    assert "CTDIvol" in outcome.message and "series 1, 2" in outcome.message
    rdsr = report(1, series=999, sop_class=XRAY_DOSE_SR)
    fixed = make_study(tmp_path / "sr", StudySpec(extra=[rdsr]), mutate=_delete("CTDIvol"),
                       only=lambda ds: ds.Modality == "CT")
    assert only_outcome(fixed, "QC-DOSE").passed


def test_dose_on_derived_or_localizer_series_is_not_required(tmp_path: Path) -> None:
    def scout(ds: Dataset) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        del ds.CTDIvol

    instances = make_study(tmp_path, mutate=scout, only=in_series(1))
    assert only_outcome(instances, "QC-DOSE").passed


def test_dx_dose_by_entrance_dose(tmp_path: Path) -> None:
    def entrance_dose(ds: Dataset) -> None:
        del ds.ImageAndFluoroscopyAreaDoseProduct
        ds.EntranceDoseInmGy = "0.2"

    spec = StudySpec(modality="DX", series_sizes=(2,), with_report=False, size=128)
    assert only_outcome(make_study(tmp_path / "ok", spec, mutate=entrance_dose,
                                   only=lambda ds: ds.Modality == "DX"), "QC-DOSE").passed
    broken = make_study(tmp_path / "bad", spec, mutate=_delete("ImageAndFluoroscopyAreaDoseProduct"))
    assert not only_outcome(broken, "QC-DOSE").passed


def test_mr_needs_no_dose(tmp_path: Path) -> None:
    assert outcomes_for(make_study(tmp_path, StudySpec(modality="MR")), "QC-DOSE") == []


def test_missing_report_warns_for_mr(tmp_path: Path) -> None:
    outcome = only_outcome(make_study(tmp_path / "bad", StudySpec(modality="MR", with_report=False)),
                           "QC-REPORT")
    assert not outcome.passed and outcome.severity == "warn"
    pdf = report(1, sop_class=ENCAPSULATED_PDF)
    fixed = make_study(tmp_path / "pdf", StudySpec(modality="MR", with_report=False, extra=[pdf]))
    assert only_outcome(fixed, "QC-REPORT").passed


def test_dose_sr_is_not_a_report(tmp_path: Path) -> None:
    rdsr = report(1, series=999, sop_class=XRAY_DOSE_SR)
    instances = make_study(tmp_path, StudySpec(with_report=False, extra=[rdsr]))
    assert not only_outcome(instances, "QC-REPORT").passed


def test_dx_needs_no_report(tmp_path: Path) -> None:
    spec = StudySpec(modality="DX", series_sizes=(1,), with_report=False, size=128)
    assert outcomes_for(make_study(tmp_path, spec), "QC-REPORT") == []


# --- inputs ---------------------------------------------------------------------------

def test_mixed_studies_and_empty_input_are_refused(tmp_path: Path) -> None:
    first = make_study(tmp_path / "a")
    second = make_study(tmp_path / "b", StudySpec(study=2))
    with pytest.raises(QcError, match="once per study"):
        run_checks(first + second, RULES)
    with pytest.raises(QcError):
        run_checks([], RULES)


def test_from_path_refuses_a_non_dicom_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    with pytest.raises(InvalidInstance):
        QcInstance.from_path(junk)


def test_off_severity_disables_a_check(tmp_path: Path) -> None:
    rules = replace(RULES, pixels=replace(RULES.pixels, lossy="off"))
    outcomes = run_checks(make_study(tmp_path), rules)
    assert not [o for o in outcomes if o.code == "QC-LOSSY"]


def test_check_builds_multiframe_middle_frame(tmp_path: Path) -> None:
    def multiframe(ds: Dataset) -> None:
        frames = np.zeros((3, 64, 64), np.int16)
        frames[1] = np.arange(64 * 64, dtype=np.int16).reshape(64, 64)
        set_pixels(ds, frames[0])
        ds.NumberOfFrames = 3
        ds.PixelData = frames.tobytes()

    instances = make_study(tmp_path, StudySpec(series_sizes=(1,)), mutate=multiframe,
                           only=lambda ds: ds.Modality == "CT")
    # Frames 0 and 2 are blank; the middle one is not, and it is the one checked.
    assert only_outcome(instances, "QC-PIXEL-RANGE").passed


# --- the generated sample studies -----------------------------------------------------

SAMPLES = sample_study_dirs()
needs_samples = pytest.mark.skipif(not SAMPLES, reason="sample_dicom/ not generated")


@needs_samples
def test_sample_studies_have_no_failed_identity_or_pixel_checks(tmp_path: Path) -> None:
    for number, study_dir in enumerate(SAMPLES):
        instances = sample_copies(study_dir, tmp_path / str(number))
        bad = [o for o in failed(run_checks(instances, RULES), "fail")
               if o.code.startswith(("QC-ID", "QC-PIXEL", "QC-FMT", "QC-COUNT"))]
        assert bad == [], study_dir


@needs_samples
def test_sample_study_modified_per_test_fails(tmp_path: Path) -> None:
    study_dir = next(d for d in SAMPLES if any("_CT" in p.parent.name for p in d.rglob("*.dcm")))

    def break_it(ds: Dataset) -> None:
        ds.StudyDate = "2026/11/10"
        if "IssuerOfPatientID" in ds:
            del ds.IssuerOfPatientID

    instances = sample_copies(study_dir, tmp_path, mutate=break_it, only=lambda ds: ds.Modality == "CT")
    codes = {o.code for o in failed(run_checks(instances, RULES), "fail")}
    assert {"QC-FMT-DATE", "QC-ID-ISSUER"} <= codes
