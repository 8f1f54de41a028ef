"""Decoding a signature image to 8-bit grayscale, safely: the one decode policy of every input path
(training data, ``sigverify verify``, the HTTP service, the Streamlit app).

Handles 16-bit, alpha, palette and CMYK images and applies the EXIF orientation (a phone photo is decoded
as it is displayed); rejects empty, truncated, non-image, multi-frame (a multi-page TIFF, an animation:
which page is the signature?) and oversized (decompression bomb) files with a :class:`DataError` naming
the file.
"""
from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sigverify.data.errors import DataError, ImageTooLarge, NotAnImage

#: Largest image accepted, in pixels (a 600 dpi A4 page is ~35 Mpx).
DEFAULT_MAX_PIXELS = 64_000_000


def pillow_limit() -> int:
    """Pillow refuses to open an image of more pixels than this (its decompression-bomb error), before any
    check of ours runs: no limit of ours can be higher."""
    return 2 * Image.MAX_IMAGE_PIXELS


def check_max_pixels(max_pixels: int) -> int:
    if not 0 < max_pixels <= pillow_limit():
        raise ValueError(f"max_pixels must be between 1 and {pillow_limit():,} (Pillow opens no larger image), "
                         f"got {max_pixels:,}")
    return max_pixels


def load_grayscale(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return the image at ``path`` as a uint8 [H, W] array, dark ink on light paper."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file")
    return _decode(path, path, max_pixels)[0]


def decode_grayscale(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                     formats: tuple[str, ...] | None = None) -> tuple[np.ndarray, str]:
    """:func:`load_grayscale` for an upload held in memory, and the format found. The format is sniffed
    from the content, never taken from ``name`` (which only labels errors); ``formats`` limits it (PIL
    names: "PNG", "JPEG", ...)."""
    if not data:
        raise DataError(name, "empty file")
    return _decode(io.BytesIO(data), name, max_pixels, formats)


def _decode(source, name, max_pixels: int, formats: tuple[str, ...] | None = None) -> tuple[np.ndarray, str]:
    try:
        with Image.open(source, formats=formats) as img:
            found = img.format
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLarge(name, f"image too large ({width}x{height} px > {max_pixels} px limit; "
                                      "possible decompression bomb)")
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                raise DataError(name, f"{frames} frames (pages or an animation) in one file; send one signature "
                                      "image per file")
            with warnings.catch_warnings():  # our limit was checked above; Pillow's lower warning level is not ours
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img.load()
            gray = _to_gray(ImageOps.exif_transpose(img))
    except DataError:
        raise
    except UnidentifiedImageError as err:
        if isinstance(source, io.BytesIO):  # PIL's message would name the in-memory buffer
            raise NotAnImage(name, "not a readable image (its content is none of: "
                                  f"{', '.join(formats or ('the formats Pillow reads',))})") from err
        raise NotAnImage(name, f"not a readable image ({type(err).__name__}: {err})") from err
    except Image.DecompressionBombError as err:
        # Pillow refuses before the size check above can run (over twice its own limit, which ours never exceeds:
        # check_max_pixels): quote ours, not its.
        size = re.search(r"\((\d+) pixels\)", str(err))
        found = f"{size.group(1)} px > " if size else "over the "
        raise ImageTooLarge(name, f"image too large ({found}{max_pixels} px limit; possible decompression bomb)") from err
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt data
        raise DataError(name, f"corrupt or truncated image ({err})") from err
    if gray.size == 0:
        raise DataError(name, "image has no pixels")
    return gray, found


def _to_gray(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # Scale 16/32-bit data to 8 bits by its own range; a fixed >>8 would turn faint scans black.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return ((arr - lo) * scale).round().astype(np.uint8)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        # Transparent pixels are paper: composite on white before dropping alpha.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode == "CMYK":
        img = img.convert("RGB")
    return np.asarray(img.convert("L"), dtype=np.uint8)

