"""Safe image decoding: a corpus of bad and unusual inputs built in-process, each with its documented result."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from prodcat.image.decode import DEFAULT_MAX_PIXELS, DecodedImage, decode_image, probe_image, to_rgb


def _save(im: Image.Image, path: Path, **kw) -> Path:
    im.save(path, **kw)
    return path


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` but which holds no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _noise(w: int = 64, h: int = 48) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _check_failed(d: DecodedImage, reason: str) -> None:
    assert d.image is None and not d.ok
    assert d.reason == reason


def test_good_jpeg_path_and_bytes(tmp_path: Path) -> None:
    path = _save(_noise(), tmp_path / "ok.jpg", quality=95)
    for source in (path, str(path), path.read_bytes()):
        d = decode_image(source)
        assert d.ok and d.reason is None
        assert d.image is not None and d.image.mode == "RGB"
        assert d.image.size == d.size == (64, 48)


@pytest.mark.parametrize("source", [None, "", "   ", float("nan")])
def test_no_source_is_missing(source) -> None:
    _check_failed(decode_image(source), "no image")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    _check_failed(decode_image(tmp_path / "nope.jpg"), "missing file")
    _check_failed(decode_image(tmp_path), "missing file")


@pytest.mark.parametrize("url", ["https://cdn.example.com/a.jpg", " HTTP://x/y.png", "s3://bucket/key.jpg"])
def test_urls_are_named_not_fetched(url: str) -> None:
    """Catalogs often hold image URLs; prodcat never fetches them and says so (was reported as a missing file)."""
    _check_failed(decode_image(url), "URL not fetched")
    assert probe_image(url)[2] == "URL not fetched"


def test_zero_byte_file_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    _check_failed(decode_image(tmp_path / "empty.jpg"), "zero-byte file")
    _check_failed(decode_image(b""), "zero-byte file")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "fake.jpg").write_text("id,title\n1,not a picture\n")
    _check_failed(decode_image(tmp_path / "fake.jpg"), "not an image")
    assert probe_image(tmp_path / "fake.jpg") == (False, None, "not an image")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(tmp_path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    _noise(200, 150).save(buf, format=fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    d = decode_image(path)
    _check_failed(d, "truncated")
    assert d.size == (200, 150)  # the header was readable
    assert probe_image(path) == (True, (200, 150), None)  # header-only probe cannot see truncation


def _scrambled_jpeg(seed: int) -> bytes:
    """A 120x80 JPEG whose headers are intact and whose entropy-coded body is random bytes."""
    data = bytearray(_jpeg_bytes(_noise(120, 80)))
    rng = np.random.default_rng(seed)
    body = data.index(b"\xff\xda") + 20  # keep every header up to the start-of-scan marker
    data[body:-2] = rng.integers(0, 256, len(data) - body - 2, dtype=np.uint8).tobytes()
    return bytes(data)


def test_corrupt_jpeg_body_that_the_decoder_gives_up_on_is_reported_corrupt() -> None:
    d = decode_image(_scrambled_jpeg(0))  # these random bytes break libjpeg's data stream
    assert d.image is None
    assert d.reason is not None and d.reason.startswith("corrupt: OSError")


def test_corrupt_jpeg_body_that_the_decoder_resyncs_on_gives_an_image_of_the_header_size() -> None:
    d = decode_image(_scrambled_jpeg(1))  # libjpeg resyncs on these and fills garbage pixels
    assert d.ok and d.reason is None
    assert d.image is not None and d.image.size == (120, 80) and d.image.mode == "RGB"


def test_garbage_after_magic_number() -> None:
    d = decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    assert not d.ok and d.reason is not None


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    d = decode_image(_save(cmyk, tmp_path / "cmyk.jpg", quality=95))
    assert d.image is not None and d.image.mode == "RGB"
    r, g, b = np.asarray(d.image)[16, 16].astype(int)
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize(
    ("mode", "transparent", "opaque"),
    [("RGBA", (10, 20, 30, 0), (10, 20, 30, 255)), ("LA", (40, 0), (40, 255))],
)
def test_alpha_is_composited_on_white(tmp_path: Path, mode: str, transparent, opaque) -> None:
    im = Image.new(mode, (10, 10), transparent)
    im.paste(Image.new(mode, (5, 10), opaque), (0, 0))
    d = decode_image(_save(im, tmp_path / "alpha.png"))
    a = np.asarray(d.image)
    assert d.image is not None and d.image.mode == "RGB"
    assert (a[:, 7] == 255).all()  # transparent half -> white
    expected = opaque[:3] if mode == "RGBA" else (opaque[0],) * 3
    assert tuple(a[0, 0]) == expected


def test_palette_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (8, 8), 1)
    im.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    im.paste(0, (0, 0, 4, 8))  # index 0 is transparent
    for suffix in ("png", "gif"):
        d = decode_image(_save(im, tmp_path / f"pal.{suffix}", transparency=0))
        a = np.asarray(d.image)
        assert d.image is not None and d.image.mode == "RGB"
        assert tuple(a[0, 0]) == (255, 255, 255)
        assert tuple(a[0, 6]) == (200, 0, 0)


def test_sixteen_bit_greyscale_is_rescaled(tmp_path: Path) -> None:
    arr = np.zeros((4, 6), dtype=np.uint16)
    arr[:, 2:4] = 32896  # 128 * 257
    arr[:, 4:] = 65535
    path = _save(Image.fromarray(arr), tmp_path / "grey16.png")
    assert Image.open(path).mode.startswith("I")
    d = decode_image(path)
    a = np.asarray(d.image)
    assert d.image is not None and d.image.mode == "RGB"
    assert tuple(a[0, 0]) == (0, 0, 0) and tuple(a[0, 3]) == (128, 128, 128) and tuple(a[0, 5]) == (255,) * 3


def test_float_and_bilevel_greyscale() -> None:
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert np.asarray(to_rgb(f))[0, :, 0].tolist() == [0, 128, 255]
    assert to_rgb(Image.new("1", (3, 3), 1)).getpixel((1, 1)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; display = rotate 90 degrees clockwise
    path = _save(im, tmp_path / "rot.jpg", exif=exif, quality=95)
    d = decode_image(path)
    assert d.image is not None and d.image.size == d.size == (20, 40)
    a = np.asarray(d.image).astype(int)
    assert a[5, 10, 0] > 200 and a[5, 10, 2] < 60  # top is the former left (red)
    assert a[35, 10, 2] > 200 and a[35, 10, 0] < 60  # bottom is the former right (blue)
    assert probe_image(path) == (True, (20, 40), None)


def test_exif_orientation_in_png(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8  # display = rotate 90 degrees counter-clockwise
    path = _save(Image.new("RGB", (30, 10), (0, 128, 0)), tmp_path / "rot.png", exif=exif)
    d = decode_image(path)
    assert d.image is not None and d.image.size == d.size == (10, 30)


def test_huge_dimensions_refused_from_header(tmp_path: Path) -> None:
    # 9000 x 9000 = 81 Mpx: over our limit, under Pillow's warning threshold. No pixel data exists, so a
    # "too large" answer proves the size was checked before decoding.
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(9000, 9000))
    assert 9000 * 9000 > DEFAULT_MAX_PIXELS
    d = decode_image(path)
    _check_failed(d, "too large: 9000 x 9000")
    assert d.size == (9000, 9000)
    assert probe_image(path) == (False, (9000, 9000), "too large: 9000 x 9000")
    # A caller may lower the limit.
    small = _save(_noise(100, 100), tmp_path / "s.png")
    _check_failed(decode_image(small, max_pixels=99 * 100), "too large: 100 x 100")


def test_decompression_bomb_beyond_pillow_guard() -> None:
    d = decode_image(_png_header_only(30000, 30000))
    _check_failed(d, "too large: 900000000 pixels")


def test_draft_decodes_large_jpeg_smaller(tmp_path: Path) -> None:
    path = _save(_noise(1000, 800), tmp_path / "big.jpg")
    d = decode_image(path, draft=224)
    assert d.image is not None and d.size == (1000, 800)
    assert 224 <= min(d.image.size) < 800


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    d = decode_image(data)
    assert d.ok != (d.reason is not None)
    if d.image is not None:
        assert d.image.mode == "RGB"


@settings(max_examples=25, deadline=None)
@given(cut=st.integers(min_value=0, max_value=2000))
def test_any_prefix_of_a_jpeg_never_raises(cut: int) -> None:
    data = _jpeg_bytes(_noise(50, 40))
    d = decode_image(data[:cut])
    assert d.ok != (d.reason is not None)
    if cut < len(data) - 2:
        assert not d.ok


@pytest.mark.realdata
def test_fashion_images_probe_and_decode(shared_data: Path) -> None:
    import pandas as pd

    folder = shared_data / "fashion"
    paths = [folder / p for p in pd.read_csv(folder / "products.csv", usecols=["image"])["image"]]
    assert len(paths) == 12176
    probes = [probe_image(p) for p in paths[::6]]  # header-only probes of every 6th image
    assert all(ok for ok, _, _ in probes)
    sizes = [size for _, size, _ in probes]
    assert sizes.count((60, 80)) > 0.99 * len(sizes) and all(s is not None and max(s) <= 80 for s in sizes)
    for p in paths[::400]:  # full decode of a sample
        d = decode_image(p)
        assert d.ok and d.image is not None and d.image.mode == "RGB" and d.image.size == d.size
