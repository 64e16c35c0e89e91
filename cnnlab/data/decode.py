"""Decode one image file into a uint8 array at the model's size, or say why not.

Everything a user's folder can hold goes through here: JPEG, PNG, BMP, GIF (first frame),
WebP, TIFF; palette, alpha, CMYK and 16-bit modes; EXIF-rotated phone photos. A file that
cannot be used raises :class:`BadImage` with a short reason, and callers skip it.

Large JPEGs are decoded at a reduced DCT scale (Pillow's *draft* mode: 1/2, 1/4 or 1/8)
when the target is much smaller, which is several times faster than a full decode.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.errors import DataError

# Decompression bombs: a small file that claims a huge image. cnnlab refuses anything above
# MAX_PIXELS itself (with a clear reason) and keeps Pillow's own check as a second line.
MAX_PIXELS = 64_000_000  # 64 megapixels: more than any camera photo, far below a bomb
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
RESIZE_POLICIES = ("stretch", "crop", "letterbox")
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white


class BadImage(DataError):
    """A file that cannot be used as an image; ``reason`` says why in a few words."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def is_image_file(path: str | Path) -> bool:
    """True for a visible file with an image extension (hidden files are skipped)."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer or float grayscale -> 8-bit 'L', keeping the full range."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16") or (arr.dtype.kind in "iu" and arr.max(initial=0) > 255):
        top = 65535.0 if arr.max(initial=0) <= 65535 else float(arr.max())
        arr = np.clip(arr.astype(np.float64) * (255.0 / top), 0, 255)
    elif arr.dtype.kind == "f":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = np.nan_to_num((arr - lo) * (255.0 / (hi - lo)) if hi > lo else arr * 0)
    return Image.fromarray(arr.round().astype(np.uint8), mode="L")


def to_mode(im: Image.Image, channels: int) -> Image.Image:
    """Any Pillow mode -> 'RGB' (channels=3) or 'L' (channels=1), alpha on white."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _to_8bit(im)
    if im.mode == "1":
        im = im.convert("L")
    if im.mode in ("LA", "PA", "RGBA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        im = Image.alpha_composite(background, rgba).convert("RGB")
    if channels == 1:
        return im if im.mode == "L" else im.convert("L")
    return im if im.mode == "RGB" else im.convert("RGB")


def resize(im: Image.Image, size: tuple[int, int], policy: str = "stretch") -> Image.Image:
    """Resize to (height, width): stretch, centre crop (fill), or letterbox (fit and pad)."""
    h, w = size
    if im.size == (w, h):
        return im
    if policy == "stretch":
        return im.resize((w, h), Image.Resampling.BILINEAR)
    if policy == "crop":
        return ImageOps.fit(im, (w, h), Image.Resampling.BILINEAR)
    if policy == "letterbox":
        fill = 0 if im.mode == "L" else (0, 0, 0)
        return ImageOps.pad(im, (w, h), Image.Resampling.BILINEAR, color=fill)
    raise ValueError(f"resize policy must be one of {', '.join(RESIZE_POLICIES)}, got {policy!r}")


def check_regular_file(path: str | Path) -> None:
    """BadImage for an empty file, or for a pipe or device named like an image (reading
    one would wait forever, or never end)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise BadImage(path, "not a regular file (a pipe, socket or device)")
    if st.st_size == 0:
        raise BadImage(path, "empty file (0 bytes)")


def open_image(path: str | Path) -> Image.Image:
    """Open a file with Pillow (header only) and check its claimed size; BadImage if unusable."""
    path = Path(path)
    try:
        check_regular_file(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": EXIF is optional
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except BadImage:
        raise
    except PermissionError:
        raise BadImage(path, "permission denied") from None
    except UnidentifiedImageError:
        raise BadImage(path, _diagnose(path)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(path, _bomb_reason(e)) from None
    except OSError as e:  # the file name is already in the message: keep only the reason
        if e.strerror is None and "truncated" in str(e).lower():  # Pillow's "Truncated File Read": the header
            raise BadImage(path, "corrupt image data: truncated file (image data ends early)") from None
        raise BadImage(path, f"cannot open: {e.strerror or e}") from None
    except (ValueError, SyntaxError) as e:
        raise BadImage(path, f"cannot open: {e}") from None
    w, h = im.size
    if w < 1 or h < 1:
        im.close()
        raise BadImage(path, f"invalid size {w}x{h}")
    if w * h > MAX_PIXELS:
        im.close()
        raise BadImage(path, f"decompression bomb refused: the header claims {w}x{h} pixels "
                             f"(limit {MAX_PIXELS // 1_000_000} megapixels)")
    return im


# The first bytes of the formats we read, to tell "corrupt PNG" from "not an image at all".
SIGNATURES = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP",
              b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"RIFF": "WEBP"}


def _diagnose(path: Path) -> str:
    """Why Pillow could not identify a file: a corrupt file of a known format, or not an image."""
    with open(path, "rb") as f:
        head = f.read(16)
    fmt = next((name for sig, name in SIGNATURES.items() if head.startswith(sig)), None)
    if fmt is None or fmt not in Image.OPEN:
        return "not an image Pillow can read (unknown format)"
    factory = Image.OPEN[fmt][0]
    try:  # the format's own parser says what is wrong
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            factory(f, str(path)).close()
    except Exception as e:
        return f"corrupt {fmt} file: {str(e) or e.__class__.__name__}"
    return f"corrupt {fmt} file (Pillow cannot identify it)"


def check_png_crc(path: str | Path) -> None:
    """Verify every PNG chunk's CRC; Pillow checks the header's but not the image data's.

    A flipped bit in the data (a bad disk, a broken download) otherwise decodes to garbage
    without any error.
    """
    data = Path(path).read_bytes()
    pos = 8  # after the signature
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            raise BadImage(path, "truncated file (image data ends early)")
        (crc,) = struct.unpack(">I", data[end:end + 4])
        if zlib.crc32(data[pos + 4:end]) != crc:
            raise BadImage(path, f"corrupt PNG file: bad checksum in the {kind.decode('latin-1')} chunk")
        if kind == b"IEND":
            return
        pos = end + 4


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright), or 1 when the EXIF block is missing or broken."""
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block is no reason to lose the photo
        return 1


def _bomb_reason(e: Exception) -> str:
    """Pillow's decompression-bomb message, shortened to one clause with the pixel count."""
    m = re.search(r"\((\d+) pixels\)", str(e))
    claimed = f"{int(m.group(1)):,} pixels" if m else "too many pixels"
    return f"decompression bomb refused: the header claims {claimed} (limit {MAX_PIXELS // 1_000_000} megapixels)"


def load_image(
    path: str | Path,
    size: tuple[int, int] | None = None,
    channels: int = 3,
    policy: str = "stretch",
) -> np.ndarray:
    """Decode ``path`` to a uint8 array of shape (height, width, channels).

    ``size`` is (height, width); None keeps the file's own size. Raises BadImage.
    """
    path = Path(path)
    if policy not in RESIZE_POLICIES:
        raise DataError(f"resize policy must be one of {', '.join(RESIZE_POLICIES)}, got {policy!r}")
    im = open_image(path)
    try:
        with im, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": the pixels are fine
            # A JPEG's EXIF block is known at open (its rotation decides the draft size);
            # TIFF, PNG and WebP keep theirs in tags read below, after loading.
            is_jpeg = im.format == "JPEG"
            orientation = _orientation(im) if is_jpeg and "exif" in im.info else 1
            if size is not None and is_jpeg:
                h, w = size
                if orientation in (5, 6, 7, 8):  # stored rotated by 90 degrees
                    h, w = w, h
                # Decode at 1/2, 1/4 or 1/8 scale while still >= the target; grayscale
                # models ask the JPEG decoder for the luma plane only.
                mode = "L" if channels == 1 and im.mode in ("RGB", "L") else im.mode
                im.draft(mode if mode in ("RGB", "L") else None, (w, h))
            if im.format == "PNG":  # before decoding: bit rot reads as a checksum error
                check_png_crc(path)
            im.seek(0)  # GIF/TIFF: the first frame
            im.load()
            if not is_jpeg:
                orientation = _orientation(im)
            if orientation != 1:
                im = ImageOps.exif_transpose(im)
            im = to_mode(im, channels)
            if size is not None:
                im = resize(im, size, policy)
            arr = np.array(im, dtype=np.uint8)  # a writable copy
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(path, _bomb_reason(e)) from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, ZeroDivisionError) as e:
        reason = str(e) or e.__class__.__name__
        if "truncated" in reason:
            reason = "truncated file (image data ends early)"
        raise BadImage(path, f"corrupt image data: {reason}") from None
    except MemoryError:
        raise BadImage(path, "too large to decode in memory") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr
