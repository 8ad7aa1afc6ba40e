"""Dominant colour names from a mask's pixels: each pixel is named in HSV, the most common name wins."""

from __future__ import annotations

import numpy as np

# hue bins (degrees, upper bound exclusive) for saturated, not-too-dark pixels
_HUES = (
    (15, "red"),
    (40, "orange"),
    (70, "yellow"),
    (160, "green"),
    (200, "cyan"),
    (255, "blue"),
    (290, "purple"),
    (340, "pink"),
)
COLOR_NAMES = (
    "black",
    "white",
    "gray",
    "brown",
    "red",
    "orange",
    "yellow",
    "green",
    "cyan",
    "blue",
    "purple",
    "pink",
)


def _rgb_to_hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rgb (N, 3) uint8 -> hue degrees [0, 360), saturation [0, 1], value [0, 1], each (N,)."""
    x = rgb.astype(np.float64) / 255.0
    mx, mn = x.max(1), x.min(1)
    delta = mx - mn
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    safe = np.where(delta > 0, delta, 1.0)
    hue = np.select(
        [delta == 0, mx == r, mx == g],
        [0.0, ((g - b) / safe) % 6.0, (b - r) / safe + 2.0],
        (r - g) / safe + 4.0,
    )
    return hue * 60.0, np.where(mx > 0, delta / np.where(mx > 0, mx, 1.0), 0.0), mx


def pixel_color_names(rgb: np.ndarray) -> np.ndarray:
    """Colour name index into ``COLOR_NAMES`` for each pixel of rgb (N, 3) uint8 -> (N,) int."""
    h, s, v = _rgb_to_hsv(rgb.reshape(-1, 3))
    names = np.full(len(h), COLOR_NAMES.index("gray"))
    chroma = (s >= 0.25) & (v >= 0.2)
    hue_idx = np.searchsorted([u for u, _ in _HUES], h, side="right")
    hue_names = np.array([COLOR_NAMES.index(n) for _, n in _HUES] + [COLOR_NAMES.index("red")])
    names[chroma] = hue_names[hue_idx[chroma]]
    brownish = chroma & (names == COLOR_NAMES.index("orange")) & (v < 0.6)
    names[brownish] = COLOR_NAMES.index("brown")
    names[~chroma & (v < 0.2)] = COLOR_NAMES.index("black")
    names[~chroma & (v >= 0.2) & (s < 0.25) & (v > 0.85)] = COLOR_NAMES.index("white")
    return names


def dominant_color(rgb: np.ndarray, mask: np.ndarray | None = None) -> str | None:
    """The most common colour name of image rgb (H, W, 3) inside ``mask`` (H, W) bool; None for an empty mask."""
    pixels = rgb[mask] if mask is not None else rgb.reshape(-1, 3)
    if len(pixels) == 0:
        return None
    counts = np.bincount(pixel_color_names(pixels), minlength=len(COLOR_NAMES))
    return COLOR_NAMES[int(counts.argmax())]
