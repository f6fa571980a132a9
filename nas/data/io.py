"""Image I/O: Pillow in, ``(3, H, W)`` float32 tensors in ``[0, 1]`` out, and back.

Conversions done by :func:`load_image` (every image comes out as 3-channel RGB):

* EXIF orientation is applied (``ImageOps.exif_transpose``), so a portrait photo taken
  with a rotated camera loads upright.
* Grayscale (``L``, ``1``) is replicated to 3 channels.
* Alpha (``RGBA``, ``LA``, ``PA``, palette with transparency) is **dropped** by default:
  the stored colour of every pixel is kept, whatever its opacity. ``alpha="white"``
  composites on white instead (``rgb * a + (1 - a)``).
* Palette (``P``) images are expanded to RGB.
* 16-bit PNG/TIFF (Pillow modes ``I;16*`` and ``I``) are divided by 65535; 32-bit
  integer images (``I``) are divided by 65535 too and clipped. Pillow decodes 16-bit
  *colour* PNGs as 8-bit ``RGB``, so those lose their low byte.
* Float images (``F``) are taken as already in ``[0, 1]`` and clipped.
* Any other mode (``CMYK``, ``YCbCr``, ``LAB``, ...) goes through ``convert("RGB")``.

A missing file raises :class:`FileNotFoundError`; a truncated, corrupt or
non-image file raises :class:`ImageReadError` (a :class:`ValueError`); both name the file.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "PairSizeError",
    "is_image_file",
    "list_images",
    "load_image",
    "natural_key",
    "resize_image",
    "resize_max_side",
    "save_image",
]

#: File suffixes (lower case) treated as images when scanning folders.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}
)

_SAVE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}


class ImageReadError(ValueError):
    """An image file exists but cannot be decoded (truncated, corrupt, not an image)."""


class PairSizeError(ValueError):
    """Images that must be pixel-aligned (under / over / ground truth) differ in size."""


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded integers numerically: ``"2" < "10"``, ``"a2" < "a10"``."""
    parts = re.split(r"(\d+)", text.lower())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != "")


def is_image_file(path: str | os.PathLike) -> bool:
    """True when ``path`` has an image suffix (case-insensitive) and is not a hidden file."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (hidden files and folders skipped), in natural order.

    Args:
        folder: directory to scan.
        recursive: descend into sub-folders.

    Returns:
        Paths sorted by their natural key relative to ``folder``.
    """
    root = Path(folder)
    it = root.rglob("*") if recursive else root.iterdir()
    out = []
    for p in it:
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and is_image_file(p):
            out.append(p)
    return sorted(out, key=lambda p: natural_key(p.relative_to(root).as_posix()))


def _to_float_rgb(img: Image.Image, alpha: str) -> np.ndarray:
    """Convert a decoded Pillow image to an ``(H, W, 3)`` float32 array in ``[0, 1]``."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode == "1":
        img = img.convert("L")
    elif mode == "RGBa":
        img = img.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not mode.startswith("I;16"):
        img = img.convert("RGB")
    mode = img.mode

    a: np.ndarray | None = None
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float32) / 65535.0
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float32)
    else:
        arr = np.asarray(img).astype(np.float32) / 255.0
        if mode in ("LA", "RGBA"):
            arr, a = arr[..., :-1], arr[..., -1:]
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if a is not None and alpha == "white":
        arr = arr * a + (1.0 - a)
    arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(arr, 0.0, 1.0)


def load_image(
    path: str | os.PathLike, *, alpha: str = "drop", max_side: int | None = None
) -> torch.Tensor:
    """Load an image file as an RGB tensor (see the module docstring for conversions).

    Args:
        path: image file.
        alpha: ``"drop"`` (default: keep the stored colour, ignore opacity) or
            ``"white"`` (composite on a white background).
        max_side: if given, downscale (antialiased) so that ``max(H, W) <= max_side``;
            JPEGs are decoded at a reduced scale first (``Image.draft``), which is much
            faster for large photos.

    Returns:
        ``(3, H, W)`` float32 tensor in ``[0, 1]``, upright (EXIF orientation applied).

    Raises:
        FileNotFoundError: ``path`` does not exist (message names it).
        ImageReadError: the file cannot be decoded (message names it).
    """
    if alpha not in ("drop", "white"):
        raise ValueError(f"alpha must be 'drop' or 'white', got {alpha!r}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: '{p}'")
    try:
        with Image.open(p) as img:
            if max_side is not None and img.format == "JPEG":
                img.draft(img.mode, (max_side, max_side))
            img.load()
            img = ImageOps.exif_transpose(img)
            arr = _to_float_rgb(img, alpha)
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises OSError/SyntaxError/ValueError/... by decoder
        raise ImageReadError(f"cannot read image '{p}': {type(exc).__name__}: {exc}") from exc
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"cannot read image '{p}': empty image")
    out = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    if max_side is not None:
        out = resize_max_side(out, max_side)
    return out


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of ``(C, H, W)`` / ``(B, C, H, W)`` to ``size=(h, w)``.

    Values are clipped back to ``[0, 1]``; a no-op when the size already matches.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    x = image[None] if image.ndim == 3 else image
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    y = y.clamp_(0.0, 1.0)
    return y[0] if image.ndim == 3 else y


def resize_max_side(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """Downscale ``(C, H, W)`` so that ``max(H, W) <= max_side`` (aspect ratio kept)."""
    h, w = image.shape[-2:]
    if max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    return resize_image(image, (max(1, round(h * s)), max(1, round(w * s))))


def save_image(
    image: torch.Tensor,
    path: str | os.PathLike,
    *,
    protected: Iterable[str | os.PathLike] = (),
    quality: int = 95,
) -> Path:
    """Write an image atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        image: ``(3, H, W)``, ``(1, H, W)``, ``(H, W)`` or ``(1, 3, H, W)`` float tensor,
            values in ``[0, 1]`` (clipped; NaN written as 0), quantised to 8 bit.
        path: destination; the format follows the suffix (``.png``, ``.jpg``/``.jpeg``,
            ``.bmp``, ``.tif``/``.tiff``, ``.webp``). Parent folders are created.
        protected: paths that must never be overwritten (e.g. the input images of a
            fusion run); writing to one of them raises :class:`ValueError`.
        quality: JPEG/WebP quality.

    Returns:
        ``Path(path)``.
    """
    p = Path(path)
    fmt = _SAVE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"cannot save '{p}': unsupported suffix {p.suffix!r} "
            f"(use one of {sorted(_SAVE_FORMATS)})"
        )
    target = p.resolve()
    for q in protected:
        if Path(q).resolve() == target:
            raise ValueError(f"refusing to overwrite protected input file '{p}'")
    t = image.detach().to("cpu", torch.float32)
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"cannot save '{p}': expected (3,H,W) or (1,H,W), got {tuple(t.shape)}")
    arr = (t.nan_to_num(0.0).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    arr_np = arr.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr_np[..., 0] if arr_np.shape[-1] == 1 else arr_np)
    opts = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pil.save(f, format=fmt, **opts)
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p
