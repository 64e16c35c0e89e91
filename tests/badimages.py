"""Bad, odd and every-format image files, made on the spot for tests (no downloads).

Three families, each a dict name -> writer(path) and a ``write_*`` helper that writes them
all into a folder and returns {name: path}:

- ``BAD``: files no loader may crash on: truncated JPEG and PNG, zero bytes, text named
  ``.jpg``, random bytes, PNG with a bad CRC (in the data, and in the header), a real decompression bomb, a header claiming
  an absurd size. ``BAD_REASONS[name]`` is a word the skip reason must contain.
- ``ODD``: valid files that naive code gets wrong: 16-bit grayscale PNG and TIFF, CMYK
  JPEG, palette with transparency, animated GIF, EXIF-rotated JPEG, 1x1 and 1-pixel-thin
  images, grayscale among RGB, RGBA, LA, bilevel, 32-bit integer and float TIFF.
- ``FORMATS``: one picture as JPEG, PNG, BMP, GIF, WebP and TIFF.
- File-system trouble (``write_fs_trouble``): a file that cannot be read (permission
  denied; see ``deny_read`` for tests that run as root), symbolic-link loops, and a pipe
  and a device named like images. ``odd_names``: file names that are not UTF-8.

Every writer is deterministic. ``reference()`` is the picture the ODD/FORMATS files show,
so tests can compare decoded pixels with what was written.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

Writer = Callable[[Path], Path]


def reference(size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """(H, W, 3) uint8: left half red, right half blue, a green bar on top; not symmetric."""
    h, w = size
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (220, 30, 30)
    img[:, w // 2:] = (30, 30, 220)
    img[: max(1, h // 6)] = (30, 200, 30)
    return img


def _save(im: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def _png(width: int, height: int, idat: bytes, mode_bits: tuple[int, int] = (8, 0), bad_crc=False) -> bytes:
    """A PNG file from raw parts: IHDR (bit depth, colour type), one IDAT, IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, mode_bits[0], mode_bits[1], 0, 0, 0)
    crc = zlib.crc32(b"IHDR" + ihdr) ^ 0xFFFF if bad_crc else None
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr, crc) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


# ---------------------------------------------------------------------------- bad files


def truncated_jpeg(path: Path) -> Path:
    data = _jpeg_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    path.write_bytes(data[: len(data) // 2])
    return path


def truncated_jpeg_header(path: Path) -> Path:
    """Cut inside a long header (a 25 KB colour profile, as cameras write): Pillow fails in open()."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, "JPEG", icc_profile=bytes(range(256)) * 100)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def truncated_png(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def zero_bytes(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def text_as_jpg(path: Path) -> Path:
    path.write_text("This is a text file that someone renamed to .jpg\n" * 20)
    return path


def random_bytes(path: Path) -> Path:
    """An unknown format: bytes that match no image signature."""
    path.write_bytes(b"\x00\x13\x37" + np.random.default_rng(2).integers(0, 255, 4000, np.uint8).tobytes())
    return path


def png_bad_header_crc(path: Path) -> Path:
    """A valid 8x8 grayscale PNG whose IHDR checksum is wrong."""
    raw = b"".join(b"\x00" + bytes(range(8)) for _ in range(8))
    path.write_bytes(_png(8, 8, zlib.compress(raw), (8, 0), bad_crc=True))
    return path


def png_bad_crc(path: Path) -> Path:
    """A PNG whose image data had bits flipped after writing (bit rot): its CRC no longer matches.

    Pillow alone decodes this to garbage without complaint.
    """
    buf = io.BytesIO()
    Image.fromarray(reference()).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    idat = data.index(b"IDAT")
    data[idat + 12] ^= 0x55
    path.write_bytes(bytes(data))
    return path


def decompression_bomb(path: Path) -> Path:
    """A *valid* 9000x9000 black PNG (81 megapixels) that is only ~80 KB on disk."""
    w = h = 9000
    comp, parts, row = zlib.compressobj(9), [], b"\x00" * (w + 1)
    for _ in range(h):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    path.write_bytes(_png(w, h, b"".join(parts), (1, 0)))
    return path


def absurd_header(path: Path) -> Path:
    """A PNG whose header claims 100000x100000 pixels over a few bytes of data."""
    path.write_bytes(_png(100_000, 100_000, zlib.compress(b"\x00" * 64)))
    return path


BAD: dict[str, tuple[str, Writer]] = {
    "truncated_jpeg": ("truncated.jpg", truncated_jpeg),
    "truncated_jpeg_header": ("truncated_header.jpg", truncated_jpeg_header),
    "truncated_png": ("truncated.png", truncated_png),
    "zero_bytes": ("empty.jpg", zero_bytes),
    "text_as_jpg": ("notes.jpg", text_as_jpg),
    "unknown_format": ("mystery.png", random_bytes),
    "png_bad_crc": ("badcrc.png", png_bad_crc),
    "png_bad_header_crc": ("badheader.png", png_bad_header_crc),
    "decompression_bomb": ("bomb.png", decompression_bomb),
    "absurd_header": ("absurd.png", absurd_header),
}
BAD_REASONS = {
    "truncated_jpeg": "truncated",
    "truncated_jpeg_header": "corrupt image data: truncated file (image data ends early)",
    "truncated_png": "truncated",
    "zero_bytes": "empty",
    "text_as_jpg": "not an image",
    "unknown_format": "not an image",
    "png_bad_crc": "checksum",
    "png_bad_header_crc": "checksum",
    "decompression_bomb": "decompression bomb",
    "absurd_header": "decompression bomb",
}


def write_bad(folder: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {n: BAD[n][1](folder / BAD[n][0]) for n in (names or BAD)}


# ---------------------------------------------------------------------------- odd but valid


def gray16_png(path: Path) -> Path:
    """16-bit grayscale (mode I;16): a ramp over the full 0..65535 range."""
    ramp = np.linspace(0, 65535, 32 * 24).reshape(24, 32).astype(np.uint16)
    return _save(Image.fromarray(ramp), path)


def gray16_tiff(path: Path) -> Path:
    ramp = np.linspace(0, 65535, 32 * 24).reshape(24, 32).astype(np.uint16)
    return _save(Image.fromarray(ramp), path)


def cmyk_jpeg(path: Path) -> Path:
    return _save(Image.fromarray(reference()).convert("CMYK"), path, quality=95)


def palette_transparent(path: Path) -> Path:
    """Palette PNG whose transparent colour covers the right half (composited on white)."""
    rgba = Image.fromarray(reference()).convert("RGBA")
    arr = np.array(rgba)
    arr[:, 16:, 3] = 0
    im = Image.fromarray(arr).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    p = np.array(im)
    im.info["transparency"] = int(p[0, -1])
    return _save(im, path, transparency=int(p[0, -1]))


def rgba_png(path: Path) -> Path:
    arr = np.dstack([reference(), np.full((24, 32), 255, np.uint8)])
    arr[:, 16:, 3] = 0  # the blue half fully transparent -> white
    return _save(Image.fromarray(arr, "RGBA"), path)


def la_png(path: Path) -> Path:
    gray = np.array(Image.fromarray(reference()).convert("L"))
    alpha = np.full_like(gray, 255)
    alpha[:, 16:] = 0
    return _save(Image.fromarray(np.dstack([gray, alpha]), "LA"), path)


def animated_gif(path: Path) -> Path:
    """Three frames; the first is the reference picture, the others are solid colours."""
    frames = [Image.fromarray(reference())] + [Image.new("RGB", (32, 24), c) for c in ("yellow", "black")]
    return _save(frames[0], path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def exif_rotated_jpeg(path: Path) -> Path:
    """Stored 32 wide x 24 high with EXIF orientation 6: shown as 24 wide x 32 high."""
    im = Image.fromarray(reference())
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return _save(im, path, exif=exif, quality=95)


def one_by_one(path: Path) -> Path:
    return _save(Image.new("RGB", (1, 1), (10, 200, 10)), path)


def thin(path: Path) -> Path:
    """300 wide, 1 high."""
    return _save(Image.fromarray(np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (1, 1))), path)


def grayscale_jpeg(path: Path) -> Path:
    return _save(Image.fromarray(reference()).convert("L"), path, quality=95)


def bilevel_png(path: Path) -> Path:
    return _save(Image.fromarray(reference()).convert("L").point(lambda v: 255 if v > 100 else 0).convert("1"), path)


def int32_tiff(path: Path) -> Path:
    """Mode I (32-bit signed) holding 0..65535."""
    ramp = np.linspace(0, 65535, 32 * 24).reshape(24, 32).astype(np.int32)
    return _save(Image.fromarray(ramp, "I"), path)


def float_tiff(path: Path) -> Path:
    """Mode F (32-bit float) ramp 0..1."""
    return _save(Image.fromarray(np.linspace(0, 1, 32 * 24, dtype=np.float32).reshape(24, 32), "F"), path)


ODD: dict[str, tuple[str, Writer]] = {
    "gray16_png": ("gray16.png", gray16_png),
    "gray16_tiff": ("gray16.tif", gray16_tiff),
    "cmyk_jpeg": ("cmyk.jpg", cmyk_jpeg),
    "palette_transparent": ("palette.png", palette_transparent),
    "rgba_png": ("rgba.png", rgba_png),
    "la_png": ("la.png", la_png),
    "animated_gif": ("animated.gif", animated_gif),
    "exif_rotated_jpeg": ("rotated.jpg", exif_rotated_jpeg),
    "one_by_one": ("pixel.png", one_by_one),
    "thin": ("thin.png", thin),
    "grayscale_jpeg": ("gray.jpg", grayscale_jpeg),
    "bilevel_png": ("bilevel.png", bilevel_png),
    "int32_tiff": ("int32.tif", int32_tiff),
    "float_tiff": ("float.tif", float_tiff),
}


def write_odd(folder: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {n: ODD[n][1](folder / ODD[n][0]) for n in (names or ODD)}


# ---------------------------------------------------------------------------- formats

FORMATS = {"jpeg": ".jpg", "png": ".png", "bmp": ".bmp", "gif": ".gif", "webp": ".webp", "tiff": ".tiff"}
LOSSLESS = ("png", "bmp", "tiff", "webp")  # webp is written lossless below


def write_formats(folder: str | Path, image: np.ndarray | None = None) -> dict[str, Path]:
    """The same (H, W, 3) picture in each format of FORMATS."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(reference() if image is None else image)
    out = {}
    for fmt, ext in FORMATS.items():
        kw = {"quality": 95} if fmt == "jpeg" else {"lossless": True} if fmt == "webp" else {}
        out[fmt] = _save(im, folder / f"picture{ext}", **kw)
    return out


def large_jpeg(path: str | Path, size: tuple[int, int] = (375, 500), seed: int = 0,
               noise: float = 4.0, quality: int = 85) -> Path:
    """A photo-sized (H, W) JPEG: smooth structure plus sensor-like noise.

    The defaults give about 25-35 KB at 500x375, like a Kaggle Dogs vs Cats photo; more
    noise makes bigger files that take longer to entropy-decode.
    """
    h, w = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    k = w / 500
    base = np.stack([np.sin(xx / (k * (17 + 7 * c)) + c) * np.cos(yy / (k * (23 + 5 * c))) for c in range(3)], -1)
    arr = (base * 80 + 128 + rng.normal(0, noise, (h, w, 3))).clip(0, 255).astype(np.uint8)
    return _save(Image.fromarray(arr), Path(path), quality=quality)


# ---------------------------------------------------------------------------- file-system trouble


def symlink_loops(folder: str | Path) -> dict[str, Path]:
    """Two loops: ``again -> ..`` (a folder holding its parent) and ``self.jpg -> self.jpg``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "again").symlink_to("..", target_is_directory=True)
    (folder / "self.jpg").symlink_to("self.jpg")
    return {"folder_loop": folder / "again", "file_loop": folder / "self.jpg"}


def unreadable(path: str | Path) -> Path:
    """A valid PNG with no read permission (chmod 000). As root that stops nothing: use deny_read."""
    path = _save(Image.fromarray(reference()), Path(path))
    path.chmod(0)
    return path


def not_regular(folder: str | Path) -> dict[str, Path]:
    """Things named like images that are no files: a named pipe (reading it waits for a
    writer forever) and a link to /dev/zero (reading it never ends). POSIX only."""
    import os

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "pipe.jpg")
    (folder / "endless.png").symlink_to("/dev/zero")
    return {"pipe": folder / "pipe.jpg", "device": folder / "endless.png"}


def odd_names(folder: str | Path) -> dict[str, Path]:
    """Valid and broken PNGs whose names are not valid UTF-8 (``caf\\xe9.png``, as a zip made
    on Windows gives them) or hold a newline."""
    import os

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    latin1 = _save(Image.fromarray(reference()), folder / os.fsdecode(b"caf\xe9.png"))
    newline = _save(Image.fromarray(reference()), folder / "two\nlines.png")
    broken = folder / os.fsdecode(b"bro\xe9ken.png")
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return {"latin1_name": latin1, "newline_name": newline, "latin1_name_broken": broken}


def write_fs_trouble(folder: str | Path) -> dict[str, Path]:
    """``unreadable`` (locked.png), ``symlink_loops`` and ``not_regular`` in folder; {name: path}."""
    return {"unreadable": unreadable(Path(folder) / "locked.png"), **symlink_loops(folder), **not_regular(folder)}


def deny_read(path: str | Path, monkeypatch) -> None:
    """Make ``open(path)`` raise PermissionError for the rest of the test, as chmod 000 does.

    Root may read anything, so where the chmod does not stop this process, Python's
    ``open`` (the one Pillow calls too) is patched to refuse that one file; it can still be
    listed and stat'ed, as a real unreadable file can.
    """
    import builtins
    import errno
    import os

    target = os.path.realpath(path)
    if not os.access(target, os.R_OK):
        return  # the permission bits already refuse this user
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and os.path.realpath(file) == target:
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
