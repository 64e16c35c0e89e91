"""Data augmentation on whole batches, with Keras' ImageDataGenerator names.

Every geometric option (rotation, shifts, shear, zoom, flips, random resized crop) becomes
one 2x3 affine matrix per image; a single ``F.affine_grid`` + ``F.grid_sample`` call then
moves all the pixels of the batch at once, on whatever device the batch is on. Pixels that
come from outside the image are filled as Keras' ``fill_mode`` says:

============  ===================  =============================================
fill_mode     outside pixels        how
============  ===================  =============================================
nearest       aaaa|abcd|dddd        grid_sample(padding_mode="border")
constant      kkkk|abcd|kkkk        zeros padding, then ``cval`` where nothing landed
reflect       dcba|abcd|dcba        grid_sample(padding_mode="reflection")
wrap          abcd|abcd|abcd        sample coordinates taken modulo the image size
============  ===================  =============================================

Two fast whole-pixel options come before the warp, for small images such as CIFAR's:
``translate=t`` shifts each image by a random whole number of pixels in [-t, t] on each
axis, filling from a reflection of the image (the "pad and random crop" of ResNet-era
CIFAR training, done as one gather, no resampling), and ``alternate_flip`` mirrors each
image in every other epoch instead of at random: half of the images (chosen by the
parity of their pixel sum, so the same images every epoch) in odd epochs, the other half in
even ones, so two consecutive epochs always see both views of every image -- the
"derandomised flip" of Jordan 2024 (airbench), which trains like more epochs of random
flips. It needs the epoch: the trainer calls ``augmenter.set_epoch(epoch)``.

Then brightness (a random factor per image, as Keras) and random erasing (a random
rectangle of noise, Zhong et al. 2017). All randomness comes from the ``generator`` passed
in, so the same generator state gives the same batch.

Ranges follow Keras: ``rotation_range=20`` draws an angle in [-20, 20] degrees;
``width_shift_range=0.1`` shifts by up to 10% of the width (values >= 1 are pixels);
``shear_range`` is an angle in degrees; ``zoom_range=0.2`` draws the horizontal and the
vertical zoom separately in [0.8, 1.2] (below 1 zooms in); ``brightness_range=(0.8, 1.2)``
multiplies the pixels. ``cval`` is in [0, 1] (values above 1 are read as 0..255 pixels).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.device import to_device
from cnnlab.errors import CnnlabError

FILL_MODES = ("nearest", "constant", "reflect", "wrap")


@dataclass(frozen=True)
class AugmentConfig:
    """What to do to each training image; the defaults do nothing."""

    rotation_range: float = 0.0  # degrees, drawn in [-r, r]
    width_shift_range: float = 0.0  # fraction of the width (< 1) or pixels (>= 1)
    height_shift_range: float = 0.0
    shear_range: float = 0.0  # degrees
    zoom_range: tuple[float, float] = (1.0, 1.0)  # Keras' zoom_range=z means (1-z, 1+z)
    horizontal_flip: bool = False
    vertical_flip: bool = False
    brightness_range: tuple[float, float] | None = None  # e.g. (0.8, 1.2)
    fill_mode: str = "nearest"
    cval: float = 0.0  # the colour of fill_mode="constant"
    random_resized_crop: tuple[float, float] | None = None  # area fraction, e.g. (0.5, 1.0)
    random_erasing: float = 0.0  # probability of erasing one rectangle per image
    translate: int = 0  # whole pixels, drawn in [-t, t] on each axis, reflect-filled
    alternate_flip: bool = False  # mirror each image every other epoch (Jordan 2024)

    @property
    def geometric(self) -> bool:
        return bool(self.rotation_range or self.width_shift_range or self.height_shift_range
                    or self.shear_range or self.zoom_range != (1.0, 1.0) or self.horizontal_flip
                    or self.vertical_flip or self.random_resized_crop)

    @property
    def is_identity(self) -> bool:
        return not (self.geometric or self.brightness_range or self.random_erasing
                    or self.translate or self.alternate_flip)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def describe(self) -> str:
        """'rotation_range=20, horizontal_flip=True, ...': only what differs from no augmentation."""
        default = AugmentConfig()
        parts = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                 if getattr(self, f.name) != getattr(default, f.name)]
        return ", ".join(parts) or "none"


PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "light": AugmentConfig(rotation_range=10, width_shift_range=0.1, height_shift_range=0.1,
                           zoom_range=(0.9, 1.1), horizontal_flip=True),
    # The lecture's Dogs vs Cats generator (Chollet), with the shear as a real angle.
    "standard": AugmentConfig(rotation_range=20, width_shift_range=0.2, height_shift_range=0.2,
                              shear_range=10, zoom_range=(0.8, 1.2), horizontal_flip=True),
    "strong": AugmentConfig(rotation_range=30, width_shift_range=0.2, height_shift_range=0.2,
                            shear_range=15, zoom_range=(0.75, 1.25), horizontal_flip=True,
                            brightness_range=(0.7, 1.3), fill_mode="reflect", random_erasing=0.25),
    # Small photos (CIFAR): 2-pixel reflect translation + derandomised flip (airbench).
    "cifar": AugmentConfig(translate=2, alternate_flip=True),
    # Photos (the photo recipe): a random box of 35-100 % of the area, any aspect ratio from
    # 3:4 to 4:3, and a random mirror (Inception's crop, Szegedy et al. 2015; fastai's and
    # FFCV's from-scratch Imagenette/ImageNet training use this kind, with a lower bound of
    # 0.08-0.35: short runs of small nets want the milder end).
    "photo": AugmentConfig(random_resized_crop=(0.35, 1.0), horizontal_flip=True),
}

# Short names accepted in "flip,rotation=15,zoom=0.1" (the Keras names work too).
ALIASES = {
    "flip": "horizontal_flip", "hflip": "horizontal_flip", "vflip": "vertical_flip",
    "rotation": "rotation_range", "rotate": "rotation_range",
    "width_shift": "width_shift_range", "height_shift": "height_shift_range",
    "shear": "shear_range", "zoom": "zoom_range", "brightness": "brightness_range",
    "fill": "fill_mode", "crop": "random_resized_crop", "erasing": "random_erasing",
    "erase": "random_erasing", "shift_px": "translate", "alt_flip": "alternate_flip",
}
SHORTHANDS = ("shift",)  # shift=x sets both width_shift_range and height_shift_range


def _allowed() -> str:
    return ", ".join(sorted({f.name for f in fields(AugmentConfig)} | set(ALIASES) | set(SHORTHANDS)))


def _range(key: str, value: Any, around: float | None) -> tuple[float, float] | None:
    """0.2 -> (1-0.2, 1+0.2) when around=1; "0.8:1.2" or [0.8, 1.2] -> (0.8, 1.2)."""
    if value in (None, False, "none", "off"):
        return None
    if isinstance(value, str):
        value = value.replace(":", ",").split(",") if (":" in value) else float(value)
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise CnnlabError(f"augmentation {key} needs two numbers (low:high), got {value!r}")
        lo, hi = float(value[0]), float(value[1])
    elif around is None:
        lo, hi = float(value), 1.0
    else:
        lo, hi = around - float(value), around + float(value)
    if lo > hi or lo < 0:
        raise CnnlabError(f"augmentation {key} must be a range low:high with 0 <= low <= high, got {value!r}")
    return (lo, hi)


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on", ""):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise CnnlabError(f"augmentation {key} must be true or false, got {value!r}")


def _set(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set one option, converting value from text or YAML into its field's type."""
    key = key.strip().lower().replace("-", "_")
    if key in SHORTHANDS:
        _set(cfg, "width_shift_range", value)
        _set(cfg, "height_shift_range", value)
        return
    name = ALIASES.get(key, key)
    if name not in cfg:
        close = difflib.get_close_matches(key, [*PRESETS, *cfg, *ALIASES, *SHORTHANDS], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise CnnlabError(f"unknown augmentation option {key!r}; {hint}presets (first): {', '.join(PRESETS)}; "
                          f"options: {_allowed()}")
    try:
        if name in ("horizontal_flip", "vertical_flip", "alternate_flip"):
            cfg[name] = _bool(key, value)
        elif name == "translate":
            cfg[name] = 2 if (value is True or value == "") else int(value)
        elif name == "zoom_range":
            cfg[name] = _range(key, value, around=1.0) or (1.0, 1.0)
        elif name == "brightness_range":
            cfg[name] = _range(key, value, around=1.0)
        elif name == "random_resized_crop":
            flag = value is True or value == ""
            cfg[name] = None if value is False else _range(key, 0.5 if flag else value, None)
        elif name == "fill_mode":
            if str(value) not in FILL_MODES:
                raise CnnlabError(f"augmentation fill_mode must be one of {', '.join(FILL_MODES)}, got {value!r}")
            cfg[name] = str(value)
        elif name == "random_erasing":
            cfg[name] = 0.5 if (value is True or value == "") else float(value)
        else:
            cfg[name] = float(value)
    except (TypeError, ValueError):
        raise CnnlabError(f"augmentation {key} got {value!r}, which is not a number") from None
    if name in ("rotation_range", "width_shift_range", "height_shift_range", "shear_range",
                "translate") and cfg[name] < 0:
        raise CnnlabError(f"augmentation {key} must not be negative, got {value!r}")
    if name == "random_erasing" and not 0 <= cfg[name] <= 1:
        raise CnnlabError(f"augmentation {key} is a probability in [0, 1], got {value!r}")
    if name == "random_resized_crop" and cfg[name] and not 0 < cfg[name][0] <= cfg[name][1] <= 1:
        raise CnnlabError(f"augmentation {key} is an area fraction low:high in (0, 1], got {value!r}")


def parse_augment(text: str | dict | AugmentConfig | None) -> AugmentConfig:
    """A preset and/or overrides -> AugmentConfig.

    Accepts None or "none"; a preset ("light", "standard", "strong"); a list such as
    "flip,rotation=15,zoom=0.1" or "standard,fill=reflect,erasing=0.3"; or a dict of Keras
    names (``{"rotation_range": 15, "horizontal_flip": True}``, optionally with ``preset``).
    """
    if isinstance(text, AugmentConfig):
        return text
    if text is None:
        return PRESETS["none"]
    if isinstance(text, dict):
        text = dict(text)
        preset = text.pop("preset", None)
        pairs = ([(str(preset), "")] if preset else []) + list(text.items())
    else:
        pairs = []
        for part in str(text).split(","):
            part = part.strip()
            if part:
                key, _, value = part.partition("=")
                pairs.append((key, value if "=" in part else ""))
    base = PRESETS["none"]
    if pairs and pairs[0][1] == "" and pairs[0][0].strip().lower() in PRESETS:
        base = PRESETS[pairs.pop(0)[0].strip().lower()]
    cfg = {f.name: getattr(base, f.name) for f in fields(AugmentConfig)}
    for key, value in pairs:
        if str(key).strip().lower() in PRESETS:
            raise CnnlabError(f"augmentation preset {key!r} must come first (e.g. '{key},flip')")
        _set(cfg, str(key), value)
    return replace(base, **cfg)


class Augmenter:
    """``Augmenter(config)(x, generator)``: a randomly transformed copy of the batch x.

    x is float (N, C, H, W) with values in [0, 1], on any device; the result has the same
    shape, dtype and device, and is fully determined by x and the generator's state.
    (uint8 pixels are accepted too, and come back as float32 in [0, 1].)
    """

    def __init__(self, config: AugmentConfig | str | dict | None = None):
        self.config = parse_augment(config)
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        """The (1-based) epoch, for ``alternate_flip``."""
        self.epoch = int(epoch)

    def __repr__(self) -> str:
        return f"Augmenter({self.config.describe()})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
        """The augmented batch; ``size`` (height, width): at that size instead of x's own
        (progressive resizing). A geometric augmentation then samples the new size straight
        from x (one resampling, no extra pass); otherwise x is resized with antialiasing."""
        if x.dim() != 4:
            raise ValueError(f"Augmenter expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:  # pixels: to [0, 1] floats
            x = x.float() / 255
        cfg = self.config
        size = None if size is None or tuple(size) == tuple(x.shape[-2:]) else tuple(size)
        if cfg.is_identity or x.shape[0] == 0:
            return x if size is None else resize(x, size)
        rand = _Random(generator, x.shape[0])
        fresh = False  # x is our own tensor (not the caller's): later steps may work in place
        if cfg.alternate_flip:
            x = alternate_flip(x, self.epoch)
        if cfg.translate:
            x = translate(x, cfg.translate, rand)
        if cfg.geometric:
            x, fresh = warp(x, self.matrices(rand, x.shape[-2], x.shape[-1]), cfg.fill_mode, cfg.cval, size), True
        elif size is not None:
            x, fresh = resize(x, size), True
        if cfg.brightness_range:
            factor = to_device(rand.uniform(*cfg.brightness_range).to(x.dtype), x.device).view(-1, 1, 1, 1)
            x, fresh = (x.mul_(factor) if fresh else x * factor).clamp_(0, 1), True
        if cfg.random_erasing:
            x = self.erase(x, rand, inplace=fresh)
        return x

    def matrices(self, rand: "_Random", h: int, w: int) -> torch.Tensor:
        """(N, 3, 3) maps from output pixel to input pixel, centred coordinates (x right, y down).

        Each option is a matrix; the product says where each output pixel is read from.
        """
        cfg, n = self.config, rand.n
        m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
        if cfg.random_resized_crop:  # read from a random box of the image
            area = rand.uniform(*cfg.random_resized_crop)
            log_ratio = rand.uniform(math.log(3 / 4), math.log(4 / 3))
            ratio = torch.exp(log_ratio)  # box width / height, relative to the image's
            sx = torch.sqrt(area * ratio).clamp(max=1.0)
            sy = torch.sqrt(area / ratio).clamp(max=1.0)
            cx = rand.uniform(-1, 1) * (1 - sx) * w / 2
            cy = rand.uniform(-1, 1) * (1 - sy) * h / 2
            m = m @ _affine(sx, 0 * sx, cx, 0 * sx, sy, cy)
        if cfg.width_shift_range or cfg.height_shift_range:
            dx = cfg.width_shift_range * (w if cfg.width_shift_range < 1 else 1)
            dy = cfg.height_shift_range * (h if cfg.height_shift_range < 1 else 1)
            tx, ty = rand.uniform(-dx, dx), rand.uniform(-dy, dy)
            m = m @ _affine(1 + 0 * tx, 0 * tx, tx, 0 * tx, 1 + 0 * tx, ty)
        if cfg.rotation_range:
            a = torch.deg2rad(rand.uniform(-cfg.rotation_range, cfg.rotation_range))
            m = m @ _affine(torch.cos(a), -torch.sin(a), 0 * a, torch.sin(a), torch.cos(a), 0 * a)
        if cfg.shear_range:
            s = torch.deg2rad(rand.uniform(-cfg.shear_range, cfg.shear_range))
            m = m @ _affine(1 + 0 * s, -torch.sin(s), 0 * s, 0 * s, torch.cos(s), 0 * s)
        if cfg.zoom_range != (1.0, 1.0):
            zx, zy = rand.uniform(*cfg.zoom_range), rand.uniform(*cfg.zoom_range)
            m = m @ _affine(zx, 0 * zx, 0 * zx, 0 * zx, zy, 0 * zx)
        if cfg.horizontal_flip or cfg.vertical_flip:
            fx = 1 - 2 * rand.coin(0.5) if cfg.horizontal_flip else torch.ones(n, dtype=torch.float64)
            fy = 1 - 2 * rand.coin(0.5) if cfg.vertical_flip else torch.ones(n, dtype=torch.float64)
            m = m @ _affine(fx, 0 * fx, 0 * fx, 0 * fx, fy, 0 * fx)
        return m

    def erase(self, x: torch.Tensor, rand: "_Random", inplace: bool = False) -> torch.Tensor:
        """Replace one random rectangle (2-33% of the area) by noise, with probability p.

        ``inplace``: x may be written to (it is a fresh result of the steps before)."""
        n, c, h, w = x.shape
        area = rand.uniform(0.02, 0.33) * h * w
        ratio = torch.exp(rand.uniform(math.log(0.3), math.log(1 / 0.3)))
        eh = torch.sqrt(area * ratio).round().clamp(1, h).long()
        ew = torch.sqrt(area / ratio).round().clamp(1, w).long()
        y0 = (rand.uniform(0, 1) * (h - eh + 1)).floor().long()
        x0 = (rand.uniform(0, 1) * (w - ew + 1)).floor().long()
        on = rand.coin(self.config.random_erasing).bool()
        if not on.any():
            return x
        if not inplace:
            x = x.clone()
        for i in on.nonzero().flatten().tolist():  # noise only where it is needed
            top, left, rh, rw = int(y0[i]), int(x0[i]), int(eh[i]), int(ew[i])
            x[i, :, top:top + rh, left:left + rw] = to_device(rand.noise((c, rh, rw)).to(x.dtype), x.device)
        return x


def alternate_flip(x: torch.Tensor, epoch: int) -> torch.Tensor:
    """Mirror the images whose pixel-sum parity differs from the epoch's (1-based) parity.

    The parity of the sum of the 0..255 pixel values is a fixed coin per image, about half
    heads, that needs no index: so each image is mirrored in every other epoch.
    """
    # In float32 the sum of whole numbers below 2**24 is exact (an image of 32x32x3 pixels
    # sums to at most 783,360); larger images use float64.
    dtype = torch.float32 if x[0].numel() * 255 < 2**24 else torch.float64
    pixels = (x.to(dtype) * 255).round_() if x.is_floating_point() else x.to(dtype)
    parity = pixels.sum(dim=(1, 2, 3)) % 2
    flip = (parity != epoch % 2).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def translate(x: torch.Tensor, pixels: int, rand: "_Random") -> torch.Tensor:
    """Shift each image by whole pixels (dy, dx) drawn in [-pixels, pixels], reflect-filled.

    The image is reflect-padded by ``pixels`` and a window of its own size is cut at a
    random offset: one gather for the whole batch. Shifts larger than the image (minus one)
    are limited to what reflection can fill.
    """
    n, c, h, w = x.shape
    p = min(pixels, h - 1, w - 1)
    if p < 1:
        return x
    padded = F.pad(x, (p, p, p, p), mode="reflect").permute(0, 2, 3, 1)  # (N, H+2p, W+2p, C)
    dy = to_device((rand.uniform(0, 1) * (2 * p + 1)).floor().long().clamp(max=2 * p), x.device)
    dx = to_device((rand.uniform(0, 1) * (2 * p + 1)).floor().long().clamp(max=2 * p), x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    out = padded[torch.arange(n, device=x.device)[:, None, None], rows, cols]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2)  # channels_last memory, NCHW shape


class _Random:
    """Per-image random numbers drawn in a fixed order from one generator (on its device)."""

    def __init__(self, generator: torch.Generator, n: int):
        self.g, self.n = generator, n

    def uniform(self, lo: float, hi: float) -> torch.Tensor:
        u = torch.rand(self.n, generator=self.g, device=self.g.device, dtype=torch.float64).cpu()
        return lo + (hi - lo) * u

    def coin(self, p: float) -> torch.Tensor:
        return (self.uniform(0, 1) < p).double()

    def noise(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.rand(shape, generator=self.g, device=self.g.device)


def _affine(a, b, c, d, e, f) -> torch.Tensor:
    """(N, 3, 3) matrices [[a, b, c], [d, e, f], [0, 0, 1]] from (N,) tensors."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, c, d, e, f, zero, zero, one], dim=1).view(-1, 3, 3)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """x (N, C, H, W) at ``size`` (height, width): bilinear, antialiased when it shrinks."""
    out_dtype = x.dtype
    x = x.float() if x.dtype not in (torch.float32, torch.float64) else x
    return F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False).to(out_dtype)


def warp(x: torch.Tensor, m: torch.Tensor, fill_mode: str = "nearest", cval: float = 0.0,
         size: tuple[int, int] | None = None) -> torch.Tensor:
    """Resample x (N, C, H, W) through pixel-space matrices m (N, 3, 3), output -> input.

    ``size`` (height, width): the output's, when not x's own. The matrices' centred pixel
    coordinates are the input's; the grid is laid out at the output's size over the same
    [-1, 1] square, so the output shows the same region, at another resolution.

    The matrices use centred pixel coordinates; grid_sample wants [-1, 1] over the image
    (align_corners=False: -1 and 1 are the outer edges), so the scale S = diag(W/2, H/2)
    converts: theta = S^-1 · M · S.
    """
    n, c, h, w = x.shape
    m = m.detach().to("cpu", torch.float64)
    s = torch.tensor([[w / 2, 0, 0], [0, h / 2, 0], [0, 0, 1]], dtype=torch.float64)
    theta = (torch.linalg.inv(s) @ m @ s)[:, :2, :]
    out_dtype = x.dtype
    if x.dtype not in (torch.float32, torch.float64):  # half precision: resample in float32
        x = x.float()
    out = _resample(x, to_device(theta.to(x.dtype), x.device), fill_mode, cval, size or (h, w))
    return out.to(out_dtype)


def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta, (n, c, h, w), align_corners=False)``, faster on a CPU (benchmarks/bench_augment.py).

    grid[n, i, j] = theta[n] @ (x_j, y_i, 1) with x_j = (2j + 1) / w - 1: a part that depends
    on the column plus a part that depends on the row, so one broadcast add writes the whole
    grid (torch's version multiplies a full (h*w, 3) base grid by theta).
    """
    dt, dev = theta.dtype, theta.device
    xs = (torch.arange(w, dtype=dt, device=dev) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=dt, device=dev) * 2 + 1) / h - 1
    cols = theta[:, None, None, :, 0] * xs.view(1, 1, w, 1) + theta[:, None, None, :, 2]  # (n, 1, w, 2)
    rows = theta[:, None, None, :, 1] * ys.view(1, h, 1, 1)  # (n, h, 1, 2)
    return cols + rows


def _resample(x: torch.Tensor, theta: torch.Tensor, fill_mode: str, cval: float,
              size: tuple[int, int]) -> torch.Tensor:
    n, c, h, w = x.shape
    grid = affine_grid(theta, *size)
    if fill_mode == "nearest":
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if fill_mode == "reflect":
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if fill_mode == "wrap":
        # Pad one pixel circularly so bilinear reads across the seam, then fold the grid
        # into the original image: pixel p = ((u + 1) * W - 1) / 2, taken modulo W.
        padded = F.pad(x, (1, 1, 1, 1), mode="circular")
        size = torch.tensor([w, h], dtype=grid.dtype, device=grid.device)
        p = torch.remainder(((grid + 1) * size - 1) / 2, size)
        grid = (2 * (p + 1) + 1) / (size + 2) - 1
        return F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if fill_mode == "constant":
        cval = cval / 255.0 if cval > 1 else cval
        ones = torch.ones_like(x[:, :1])
        out = F.grid_sample(torch.cat([x, ones], 1), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        covered = out[:, -1:]
        return out[:, :-1] + (1 - covered) * cval
    raise CnnlabError(f"augmentation fill_mode must be one of {', '.join(FILL_MODES)}, got {fill_mode!r}")
