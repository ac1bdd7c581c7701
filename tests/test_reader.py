"""The radiograph reader: every DICOM variant gives the display image a viewer would show."""

import json

import cv2
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from dicom_factory import SC, make_dataset, phantom_pixels, transcode_with_gdcm, with_voi_lut
from pydicom.uid import (
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from tfmssass.cli import main
from tfmssass.io import RadiographError, image_size, read_radiograph


def linear_window(values, centre, width):
    """DICOM PS3.3 C.11.2.1.2.1, written out independently of the reader."""
    out = (values - (centre - 0.5)) / (width - 1) + 0.5
    out[values <= centre - 0.5 - (width - 1) / 2] = 0.0
    out[values > centre - 0.5 + (width - 1) / 2] = 1.0
    return out


def save(ds, path, **kwargs):
    ds.save_as(path, enforce_file_format=kwargs.pop("enforce", True), **kwargs)
    return str(path)


def test_monochrome2_window_12bit(tmp_path):
    px = phantom_pixels(bits=12)
    path = save(make_dataset(px, 12, WindowCenter=2000, WindowWidth=3000), tmp_path / "a.dcm")
    rad = read_radiograph(path)
    expected = linear_window(px.astype(float), 2000, 3000)
    np.testing.assert_allclose(rad.image, expected, atol=1e-5)
    assert rad.meta["voi"] == "window" and rad.meta["inverted"] is False
    assert rad.image.dtype == np.float32 and rad.image.shape == px.shape


def test_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    px = phantom_pixels(bits=14)
    stored = (2**14 - 1) - px  # MONOCHROME1: bone (high attenuation) stored low
    ds = make_dataset(stored, 14, "MONOCHROME1", WindowCenter=8191, WindowWidth=16383,
                      PresentationLUTShape="INVERSE")
    rad = read_radiograph(save(ds, tmp_path / "m1.dcm"))
    expected = 1.0 - linear_window(stored.astype(float), 8191, 16383)
    np.testing.assert_allclose(rad.image, expected, atol=1e-5)
    # MONOCHROME1 + INVERSE is one statement (DX IOD), inverted once: bone block is brighter.
    assert rad.image[20, 24] > rad.image[50, 24]
    assert rad.meta["inverted"] is True


def test_inverse_presentation_on_monochrome2_inverts(tmp_path):
    px = phantom_pixels(bits=12)
    ds = make_dataset(px, 12, WindowCenter=2048, WindowWidth=4096, PresentationLUTShape="INVERSE")
    rad = read_radiograph(save(ds, tmp_path / "inv.dcm"))
    np.testing.assert_allclose(rad.image, 1 - linear_window(px.astype(float), 2048, 4096), atol=1e-5)


def test_signed_pixels_with_rescale_window_in_modality_units(tmp_path):
    px = phantom_pixels(bits=12).astype(np.int16) - 2048  # signed stored values
    ds = make_dataset(px, 12, signed=True, RescaleSlope=2, RescaleIntercept=-100,
                      WindowCenter=-100, WindowWidth=6000)
    rad = read_radiograph(save(ds, tmp_path / "signed.dcm"))
    modality = px.astype(float) * 2 - 100
    np.testing.assert_allclose(rad.image, linear_window(modality, -100, 6000), atol=1e-5)


def test_voi_lut_sequence_is_applied(tmp_path):
    px = phantom_pixels(bits=12)
    first = 500
    lut = np.clip(np.arange(3000) ** 0.5 * 4.66, 0, 255).astype(np.uint16)  # a non-linear 8-bit LUT
    ds = with_voi_lut(make_dataset(px, 12), first, lut, 8)
    rad = read_radiograph(save(ds, tmp_path / "lut.dcm"))
    index = np.clip(px.astype(int) - first, 0, len(lut) - 1)
    np.testing.assert_allclose(rad.image, lut[index] / 255.0, atol=1e-5)
    assert rad.meta["voi"] == "voi_lut"


def test_no_window_uses_robust_percentiles(tmp_path):
    px = phantom_pixels(bits=16)
    px[0, 0] = 65535  # one hot pixel must not decide the contrast
    rad = read_radiograph(save(make_dataset(px, 16), tmp_path / "auto.dcm"))
    lo, hi = np.percentile(px.astype(float), (0.5, 99.5))
    np.testing.assert_allclose(rad.image, np.clip((px - lo) / (hi - lo), 0, 1), atol=1e-5)
    assert rad.meta["voi"] == "auto"
    assert rad.image.std() > 0.15  # the hot pixel did not squash the image into a few grey levels


def test_8bit(tmp_path):
    px = phantom_pixels(bits=8)
    rad = read_radiograph(save(make_dataset(px, 8, WindowCenter=128, WindowWidth=256), tmp_path / "8.dcm"))
    np.testing.assert_allclose(rad.image, linear_window(px.astype(float), 128, 256), atol=1e-5)


@pytest.fixture
def reference(tmp_path):
    px = phantom_pixels(bits=12, rows=128, cols=96)
    ds = make_dataset(px, 12, WindowCenter=2048, WindowWidth=4000)
    path = save(ds, tmp_path / "ref.dcm")
    return path, read_radiograph(path).image


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_transfer_syntaxes(tmp_path, reference, syntax):
    path, expected = reference
    ds = pydicom.dcmread(path)
    ds.compress(syntax)
    out = save(ds, tmp_path / "c.dcm")
    assert pydicom.dcmread(out).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_allclose(read_radiograph(out).image, expected, atol=1e-6)


def test_jpeg_lossless_process14(tmp_path, reference):
    path, expected = reference
    out = str(tmp_path / "jll.dcm")
    transcode_with_gdcm(path, out, "JPEGLosslessProcess14_1")
    assert "Process 14" in pydicom.dcmread(out).file_meta.TransferSyntaxUID.name
    np.testing.assert_allclose(read_radiograph(out).image, expected, atol=1e-6)


def test_big_endian(tmp_path, reference):
    path, expected = reference
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.pixel_array.astype(">u2").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    out = str(tmp_path / "be.dcm")
    pydicom.dcmwrite(out, ds, implicit_vr=False, little_endian=False,
                     force_encoding=True)
    assert pydicom.dcmread(out).file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    np.testing.assert_allclose(read_radiograph(out).image, expected, atol=1e-6)


def test_implicit_vr(tmp_path, reference):
    path, expected = reference
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = str(tmp_path / "ivr.dcm")
    ds.save_as(out, implicit_vr=True, little_endian=True, enforce_file_format=True)
    np.testing.assert_allclose(read_radiograph(out).image, expected, atol=1e-6)


def test_no_preamble_no_file_meta(tmp_path, reference):
    path, expected = reference
    ds = pydicom.dcmread(path)
    del ds.file_meta
    ds.preamble = None
    out = str(tmp_path / "raw_dataset")
    ds.save_as(out, implicit_vr=True, little_endian=True, enforce_file_format=False)
    with open(out, "rb") as fh:
        assert fh.read(132)[128:132] != b"DICM"
    rad = read_radiograph(out)
    np.testing.assert_allclose(rad.image, expected, atol=1e-6)
    assert rad.meta["patient_id"] == "P001"


def test_rgb_secondary_capture_becomes_grey(tmp_path):
    grey = phantom_pixels(bits=8)
    rgb = np.stack([grey, grey // 2, np.full_like(grey, 30)], axis=-1)
    ds = make_dataset(rgb, 8, "RGB", sop_class=SC)
    rad = read_radiograph(save(ds, tmp_path / "rgb.dcm"))
    luma = rgb.astype(float) @ [0.299, 0.587, 0.114]
    lo, hi = np.percentile(luma, (0.5, 99.5))
    np.testing.assert_allclose(rad.image, np.clip((luma - lo) / (hi - lo), 0, 1), atol=1e-5)
    assert any("grey" in w for w in rad.warnings)


def test_multiframe_uses_first_frame_with_warning(tmp_path):
    first, second = phantom_pixels(bits=12, seed=1), phantom_pixels(bits=12, seed=2)[::-1].copy()
    ds = make_dataset(np.stack([first, second]), 12, WindowCenter=2048, WindowWidth=4096)
    rad = read_radiograph(save(ds, tmp_path / "mf.dcm"))
    np.testing.assert_allclose(rad.image, linear_window(first.astype(float), 2048, 4096), atol=1e-5)
    assert any("first frame" in w for w in rad.warnings)


def test_metadata_and_calibration(tmp_path):
    px = phantom_pixels()
    calibrated = make_dataset(px, 12, PixelSpacing=[0.139, 0.139], ImagerPixelSpacing=[0.15, 0.15])
    detector_only = make_dataset(px, 12, ImagerPixelSpacing=[0.15, 0.15])
    meta = read_radiograph(save(calibrated, tmp_path / "c.dcm")).meta
    assert meta["pixel_spacing_mm"] == [0.139, 0.139] and meta["spacing_calibrated"] is True
    assert meta["patient_id"] == "P001" and meta["study_date"] == "2020-01-31"
    assert meta["modality"] == "DX" and meta["body_part"] == "LSPINE" and meta["view_position"] == "LL"
    assert meta["rows"] == px.shape[0] and meta["columns"] == px.shape[1] and meta["bits_stored"] == 12
    assert meta["study_uid"] and meta["series_uid"] and meta["sop_uid"]
    meta = read_radiograph(save(detector_only, tmp_path / "d.dcm")).meta
    assert meta["pixel_spacing_mm"] == [0.15, 0.15]
    assert meta["spacing_calibrated"] is False and meta["spacing_source"] == "ImagerPixelSpacing"
    assert image_size(tmp_path / "d.dcm") == px.shape


@pytest.mark.parametrize("ext,dtype", [(".png", np.uint8), (".png", np.uint16), (".jpg", np.uint8),
                                       (".tif", np.uint16)])
def test_png_jpeg_tiff(tmp_path, ext, dtype):
    top = np.iinfo(dtype).max
    img = (phantom_pixels(bits=8).astype(float) / 255 * top).astype(dtype)
    path = tmp_path / f"img{ext}"
    cv2.imwrite(str(path), img)
    rad = read_radiograph(path)
    error = np.abs(rad.image - img / top)
    if ext == ".jpg":  # lossy: small errors, none large
        assert error.mean() < 2 / 255 and error.max() < 16 / 255
    else:
        assert error.max() < 1e-6
    assert rad.meta["pixel_spacing_mm"] is None and rad.meta["spacing_calibrated"] is False
    assert image_size(path) == img.shape


def _one_line_error(path, fragment):
    with pytest.raises(RadiographError) as info:
        read_radiograph(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and fragment in message
    return message


def test_bad_inputs_give_one_line_reasons(tmp_path):
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    _one_line_error(empty, "empty file")

    text = tmp_path / "notes.dcm"
    text.write_text("patient was seen today; lateral views requested\n" * 10)
    _one_line_error(text, "not an image (no DICOM, PNG, JPEG or TIFF signature)")

    sr = make_dataset(phantom_pixels(), 12, sop_class="1.2.840.10008.5.1.4.1.1.88.11")
    del sr.PixelData
    _one_line_error(save(sr, tmp_path / "sr.dcm"), "no pixel data (Basic Text SR")

    truncated = make_dataset(phantom_pixels(), 12)
    truncated.PixelData = truncated.PixelData[:-200]
    _one_line_error(save(truncated, tmp_path / "short.dcm"), "shorter than the header says")

    palette = make_dataset(phantom_pixels(bits=8), 8, "PALETTE COLOR")
    _one_line_error(save(palette, tmp_path / "pal.dcm"), "unsupported photometric interpretation PALETTE COLOR")

    png = tmp_path / "cut.png"
    cv2.imwrite(str(png), phantom_pixels(bits=8))
    png.write_bytes(png.read_bytes()[:60])
    _one_line_error(png, "could not be decoded")


def test_cli_inspect_and_convert(tmp_path):
    px = phantom_pixels(bits=12)
    good = save(make_dataset(px, 12, "MONOCHROME1", WindowCenter=2048, WindowWidth=4096), tmp_path / "g.dcm")
    bad = tmp_path / "bad.dcm"
    bad.write_text("nope")
    runner = CliRunner()
    result = runner.invoke(main, ["inspect", good, str(bad)])
    assert result.exit_code == 1  # one input failed; the other was still reported
    records = [json.loads(line) for line in result.output.strip().splitlines()]
    assert records[0]["patient_id"] == "P001" and records[0]["inverted"] is True
    assert records[1]["file"] == str(bad) and "not an image" in records[1]["error"]

    out = tmp_path / "g.png"
    result = runner.invoke(main, ["convert", good, str(out), "--bits", "16"])
    assert result.exit_code == 0, result.output
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16
    expected = 1 - linear_window(px.astype(float), 2048, 4096)
    np.testing.assert_allclose(written / 65535.0, expected, atol=1 / 65535)

    result = runner.invoke(main, ["convert", str(bad), str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "not an image" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.png").exists()


def test_patient_orientation_tells_how_a_film_is_stored():
    from tfmssass.io.dicom import stored_turns

    # (columns, rows) run towards: upright a lateral film's rows run to the feet, whichever way it faces
    assert [stored_turns(v) for v in (["A", "F"], ["P", "F"], ["F", "A"], ["P", "H"], ["H", "P"])] == [0, 0, 1, 2, 3]
    # missing, oblique or frontal: the header does not say, and the image decides
    assert [stored_turns(v) for v in (None, [], ["AF", "F"], ["L", "F"], ["A"])] == [None] * 5
