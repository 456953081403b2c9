"""Safe image decoding: the only place prodcat turns image files into pixels.

``decode_image`` never raises for bad input. It returns a :class:`DecodedImage` whose ``image`` is an RGB
``PIL.Image`` or ``None`` with a short ``reason``; callers treat ``None`` as a missing image modality.

What it handles, and the ``reason`` recorded when it gives up:

==========================================  ====================================================
input                                       result
==========================================  ====================================================
path that does not exist / is a folder      ``None``, ``"missing file"``
URL (``http://``, ``https://``, ``s3://``)  ``None``, ``"URL not fetched"`` (prodcat reads local files only)
``None`` / ``""`` / NaN source              ``None``, ``"no image"``
file or bytes of length 0                   ``None``, ``"zero-byte file"``
bytes that no decoder recognises            ``None``, ``"not an image"`` (e.g. text named .jpg)
file cut short mid-stream                   ``None``, ``"truncated"``
width x height > ``max_pixels``             ``None``, ``"too large: W x H"`` (checked from the header,
                                            before any pixel is decoded)
header too large even for Pillow's guard    ``None``, ``"too large: N pixels"``
other decoder failure / unreadable file     ``None``, ``"corrupt: ..."`` / ``"unreadable: ..."``
EXIF orientation 2..8                       rotated/flipped upright
RGBA, LA, PA, P with transparency           composited on white, RGB
CMYK (with ICC profile when present)        converted to sRGB
L, 1, I;16, I, F (16-bit and float grey)    rescaled to 8 bits, replicated to RGB
==========================================  ====================================================
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 8000 x 8000: far above any catalog photo, far below a decompression bomb (about 190 MB of RGB).
DEFAULT_MAX_PIXELS = 64_000_000
_ORIENTATION_TAG = 0x0112
_ALPHA_MODES = {"RGBA", "LA", "PA", "La", "RGBa"}

ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview


@dataclass(frozen=True)
class DecodedImage:
    """Result of :func:`decode_image`.

    Attributes
    ----------
    image : RGB ``PIL.Image.Image`` (upright), or ``None`` when the source is unusable.
    reason : why ``image`` is ``None`` (see the module table); ``None`` on success.
    size : ``(width, height)`` of the full-resolution upright image when the header could be read; for images
        refused as too large, the stored size. ``None`` when not even the header is readable. With ``draft``
        the returned image may be smaller than ``size``.
    """

    image: Image.Image | None
    reason: str | None
    size: tuple[int, int] | None

    @property
    def ok(self) -> bool:
        """True when ``image`` is usable."""
        return self.image is not None


#: Image sources that name a remote object, which prodcat never fetches (no network access at run time).
URL_PREFIXES = ("http://", "https://", "ftp://", "s3://", "gs://", "az://")
URL_REASON = "URL not fetched"


def is_url(source: Any) -> bool:
    """Whether ``source`` is a string naming a remote image (``http://...``, ``s3://...``)."""
    return isinstance(source, str) and source.strip().lower().startswith(URL_PREFIXES)


def _is_blank(source: Any) -> bool:
    if source is None:
        return True
    if isinstance(source, float) and math.isnan(source):
        return True
    return isinstance(source, str) and not source.strip()


def _open_stream(source: Any) -> tuple[IO[bytes] | None, str | None]:
    """A binary stream on ``source`` or ``(None, reason)``; checks existence and emptiness without decoding."""
    if _is_blank(source):
        return None, "no image"
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        return (io.BytesIO(data), None) if data else (None, "zero-byte file")
    if is_url(source):
        return None, URL_REASON
    path = Path(os.fspath(source))
    try:
        if not path.is_file():
            return None, "missing file"
        if path.stat().st_size == 0:
            return None, "zero-byte file"
        return path.open("rb"), None
    except OSError as exc:  # permissions, broken mounts
        return None, f"unreadable: {exc.__class__.__name__}"


def _orientation(im: Image.Image) -> int:
    """EXIF orientation from header metadata only (PNG's getexif would decode the whole image: avoided)."""
    try:
        if im.format == "PNG":
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
            return int(exif.get(_ORIENTATION_TAG, 1))
        return int(im.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # malformed EXIF block: ignore orientation
        return 1


def _oriented_size(im: Image.Image) -> tuple[int, int]:
    """Size after EXIF orientation (5..8 swap width and height)."""
    w, h = im.size
    return (h, w) if _orientation(im) in (5, 6, 7, 8) else (w, h)


def _header(fp: IO[bytes], max_pixels: int) -> tuple[Image.Image | None, tuple[int, int] | None, str | None]:
    """Open lazily (header only) and refuse oversized images before any pixel is decoded."""
    try:
        im = Image.open(fp)
    except Image.DecompressionBombError as exc:
        # Pillow refuses > 2 * MAX_IMAGE_PIXELS before we see the size; its message names the pixel count.
        words = [w.strip("()") for w in str(exc).split()]
        pixels = next((w for w in words if w.isdigit()), "?")
        return None, None, f"too large: {pixels} pixels"
    except UnidentifiedImageError:
        return None, None, "not an image"
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        return None, None, _classify_error(exc)
    except Exception as exc:  # a plugin bug on hostile input must not take a batch down
        return None, None, f"corrupt: {exc.__class__.__name__}"
    w, h = im.size
    if w <= 0 or h <= 0:
        return None, (w, h), "corrupt: empty image"
    if w * h > max_pixels:  # checked before anything (EXIF included) may trigger decoding
        return None, (w, h), f"too large: {w} x {h}"
    return im, _oriented_size(im), None


def _classify_error(exc: BaseException) -> str:
    text = str(exc).lower()
    if (
        "truncated" in text
        or "premature end" in text
        or "unexpected end" in text
        or isinstance(exc, EOFError)
    ):
        return "truncated"
    return f"corrupt: {exc.__class__.__name__}: {str(exc)[:120]}"


def _grey_to_8bit(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float greyscale -> 8-bit L, rescaled (Pillow's convert would clip at 255)."""
    a = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        hi = 1.0 if a.size and np.nanmax(a) <= 1.0 else 255.0
        a = np.nan_to_num(a) * (255.0 / hi)
    elif a.size and a.max() > 255:
        a = a / 257.0  # 16-bit range 0..65535 -> 0..255
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if out is not None:
                return out
        except Exception:  # broken or unsupported profile: fall back to the naive formula
            pass
    return im.convert("RGB")


def to_rgb(im: Image.Image, *, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any Pillow mode -> RGB; transparency composited on ``background``; greyscale depth rescaled."""
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    elif im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        im = _grey_to_8bit(im)
    elif im.mode == "CMYK":
        im = _cmyk_to_rgb(im)
    elif im.mode in ("L", "1") and "transparency" in im.info:
        im = im.convert("LA")
    elif im.mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        im = Image.alpha_composite(canvas, rgba)
    return im if im.mode == "RGB" else im.convert("RGB")


def decode_image(
    source: ImageSource | None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: int | None = None,
) -> DecodedImage:
    """Decode one image safely to upright RGB; never raises for bad input.

    Parameters
    ----------
    source : path (str or PathLike) or the encoded file bytes. ``None``/""/NaN mean "no image".
    max_pixels : refuse images whose header says ``width * height`` exceeds this, before decoding pixels.
        Pillow's own guard (``2 * PIL.Image.MAX_IMAGE_PIXELS``) still applies above that.
    draft : when set, JPEGs may be decoded at a reduced DCT scale whose shorter side stays >= ``draft``
        pixels (2-8x faster for large photos that will be resized anyway). ``size`` still reports full size.

    Returns
    -------
    DecodedImage with ``image`` (RGB) or ``reason``.
    """
    fp, reason = _open_stream(source)
    if fp is None:
        return DecodedImage(None, reason, None)
    with fp:
        im, size, reason = _header(fp, max_pixels)
        if im is None:
            return DecodedImage(None, reason, size)
        try:
            with im:
                stored = im.size
                if draft is not None and im.format == "JPEG":
                    scale = draft / min(stored)
                    im.draft(
                        "RGB", (max(1, math.ceil(stored[0] * scale)), max(1, math.ceil(stored[1] * scale)))
                    )
                im.load()
                try:
                    upright = ImageOps.exif_transpose(im)
                except Exception:  # malformed EXIF: keep stored orientation
                    upright = im
                # EXIF may only be known after loading (PNG eXIf after the pixels): size follows the real result.
                swapped = upright.size != im.size
                size = (stored[1], stored[0]) if swapped else stored
                rgb = to_rgb(upright)
                rgb.load()
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as exc:
            return DecodedImage(None, _classify_error(exc), size)
        except Exception as exc:  # any other decoder bug must not take a batch down
            return DecodedImage(None, f"corrupt: {exc.__class__.__name__}", size)
    return DecodedImage(rgb, None, size)


def probe_image(
    source: ImageSource | None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[bool, tuple[int, int] | None, str | None]:
    """Cheap check for catalog summaries: reads the header only (no pixel decoding).

    Returns
    -------
    ``(ok, size, reason)``: ``size`` is the upright ``(width, height)`` when the header is readable. A file
    whose header is fine but whose pixel data is truncated or corrupt probes ``ok``; only
    :func:`decode_image` finds that.
    """
    fp, reason = _open_stream(source)
    if fp is None:
        return False, None, reason
    with fp:
        im, size, reason = _header(fp, max_pixels)
        if im is not None:
            im.close()
    return im is not None, size, reason
