"""Robust image loading for folders of real-world files.

``scan_folder(root)`` walks ``root`` in a deterministic order (sorted relative POSIX paths) and sorts every
file into good images and skipped files, each skip with its reason (recorded in the manifest): empty files,
non-images, corrupt or truncated data, too small or too large (checked from the header, before any pixel is
decoded), symlinks that leave the folder or loop, and directory symlinks (never followed; listed as ``name/``):
the walk is ``io.walk_tree``'s, confined to ``root``. ``load_rgb`` decodes a good file to (H, W, 3) uint8 RGB
with its EXIF orientation applied; CMYK, 16-bit, RGBA/LA (composited on white), palette and grayscale are converted.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from spatialboost.io import UnsafePathError, confined, walk_tree

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


@dataclass(frozen=True)
class ImageLimits:
    min_side: int = 32  # pixels; smaller images carry no usable geometry
    max_pixels: int = 40_000_000  # header check, before decode (a 20000 x 20000 image is refused)


@dataclass(frozen=True)
class ImageEntry:
    rel: str  # path relative to the root, POSIX
    path: Path  # resolved absolute path (inside the root)
    width: int  # as stored (before EXIF rotation)
    height: int


@dataclass(frozen=True)
class Skipped:
    rel: str
    reason: str


class ImageRejected(Exception):
    """A file that is not a usable image; the message is the reason."""


def scan_folder(
    root: str | Path, limits: ImageLimits = ImageLimits()
) -> tuple[list[ImageEntry], list[Skipped]]:
    """Good images and skipped files under ``root`` (recursively), both in sorted relative-path order."""
    root = Path(root).resolve()
    good: list[ImageEntry] = []
    tree = walk_tree(root)  # hidden names skipped; directory symlinks and escaping links refused
    skipped = [Skipped(r.rel, r.reason) for r in tree.refused]
    for entry in tree.files:
        try:
            good.append(probe(root, entry.rel, limits))
        except ImageRejected as e:
            skipped.append(Skipped(entry.rel, str(e)))
            log.debug("skip %s: %s", entry.rel, e)
    return good, sorted(skipped, key=lambda s: s.rel)


def probe(root: Path, rel: str, limits: ImageLimits) -> ImageEntry:
    """Check one file from its header only (no pixel decode); raise ImageRejected with the reason."""
    try:
        path = confined(root, rel)
    except UnsafePathError as e:
        raise ImageRejected(e.reason) from None
    if not path.is_file():
        raise ImageRejected("not a regular file (broken link or special file)")
    if path.stat().st_size == 0:
        raise ImageRejected("empty file (0 bytes)")
    width, height = _header_size(path)
    if min(width, height) < limits.min_side:
        raise ImageRejected(f"too small ({width}x{height} < {limits.min_side} px per side)")
    if width * height > limits.max_pixels:
        raise ImageRejected(f"too large ({width}x{height} > {limits.max_pixels} pixels); downscale it first")
    return ImageEntry(rel, path, width, height)


def _header_size(path: Path) -> tuple[int, int]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # lazy: reads the header only
                return im.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageRejected("too large (decompression-bomb sized header); downscale it first") from None
    except Image.UnidentifiedImageError:
        raise ImageRejected("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageRejected(f"unreadable header ({e})") from None


def load_rgb(entry: ImageEntry | str | Path, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Decode to (H, W, 3) uint8 RGB, EXIF orientation applied; raise ImageRejected for corrupt/truncated data."""
    path = entry.path if isinstance(entry, ImageEntry) else Path(entry)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.size[0] * im.size[1] > limits.max_pixels:
                    raise ImageRejected(f"too large ({im.size[0]}x{im.size[1]})")
                im.load()  # full decode; truncated files raise here
                im = ImageOps.exif_transpose(im)
                return to_rgb(im)
    except ImageRejected:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageRejected("too large (decompression-bomb sized image)") from None
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as e:
        raise ImageRejected(f"corrupt or truncated image data ({e})") from None


def to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8 RGB. 16-bit/float are scaled by their max; alpha is composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        gray = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return np.asarray(im.convert("RGB"), np.uint8).copy()
