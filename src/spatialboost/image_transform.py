"""The one preprocessing path: an image and its dense targets -> the encoder's square input, without torchvision.

An ``ImageTransform`` (side S, mean, std, interpolation, patch size) is what an encoder's spec says its input
is; ``models.preprocess.transform_for(spec, size)`` resolves one (timm's ``resolve_model_data_config`` ->
``create_transform``). Training (the dataset's image transform and the frozen-feature cache), the encoder's
own preprocessing, the probes' feature cache and the depth protocol's sliding crops all go through it, so the
probes see the pixels the encoder was trained on.

Geometry (``crop_geometry``, the only owner): the short side is resized to S (the long side to
``max(S, round(long * S / short))``), then the centre S x S is cut (``top``/``left`` = floor of half the
excess). Arrays are (H, W[, C]); sizes are (height, width) throughout.

- images: HxWx3 uint8 (or float in [0, 1], or PIL) -> (3, S, S) float32: resized with ``interpolation``
  (torch, antialiased when shrinking, clamped to [0, 1]), cropped, normalised with mean/std;
- dense targets (depth in metres, class ids, instance ids, masks): the same geometry with nearest neighbour
  on pixel centres (source pixel ``floor((i + 0.5) * in / out)``, torch's ``nearest-exact``), dtype kept, so
  a target pixel lands where its image pixel does.

Leaf module: it imports nothing from spatialboost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the one definition; encoders and perception backends import it
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bicubic", "bilinear")
TRANSFORM_VERSION = 1  # bump when the pixels the same settings produce change (it keys the feature caches)


@dataclass(frozen=True)
class CropGeometry:
    """Where an (height, width) image lands in the S x S input: resized to ``resized``, then cut at (top, left)."""

    size: tuple[int, int]  # (H, W) of the original, pixels
    resized: tuple[int, int]  # (H', W') after the short side went to ``side``
    top: int  # first row of the crop in the resized image
    left: int  # first column
    side: int  # S

    @property
    def scale(self) -> tuple[float, float]:
        """(rows, cols) resized pixels per original pixel (the short side's is exactly S / short)."""
        return self.resized[0] / self.size[0], self.resized[1] / self.size[1]

    def to_input(self, x: float, y: float) -> tuple[float, float]:
        """A continuous pixel position (x right, y down, pixel centres at +0.5) in the S x S input."""
        sy, sx = self.scale
        return x * sx - self.left, y * sy - self.top


def crop_geometry(height: int, width: int, side: int) -> CropGeometry:
    """Resize-short-side-to-``side`` + centre-crop of an (height, width) image."""
    if height <= 0 or width <= 0:
        raise ValueError(f"empty image of size {height}x{width}")
    scale = side / min(height, width)
    new_h, new_w = max(side, round(height * scale)), max(side, round(width * scale))
    return CropGeometry((height, width), (new_h, new_w), (new_h - side) // 2, (new_w - side) // 2, side)


def to_tensor(image: Any) -> torch.Tensor:
    """An HxWx3 (or HxW, or HxWx4) uint8 array, a float array in [0, 1], or a PIL image -> (3, H, W) float32."""
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    t = torch.tensor(arr[..., :3]).permute(2, 0, 1).float()  # copies (PIL arrays are read-only)
    return t / 255.0 if arr.dtype == np.uint8 else t


def nearest_indices(n_in: int, n_out: int, start: int, count: int) -> np.ndarray:
    """Source indices of output pixels ``start .. start + count`` when ``n_in`` pixels resize to ``n_out``."""
    out = (np.arange(start, start + count) + 0.5) * (n_in / n_out)
    return np.minimum(np.floor(out).astype(np.int64), n_in - 1)


@dataclass(frozen=True)
class ImageTransform:
    """Images -> (n, 3, S, S) normalised tensors, targets -> (S, S), through one ``crop_geometry``."""

    side: int  # S, pixels
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"  # of images; targets are always nearest
    patch_size: int | None = None  # the encoder's: gives ``grid`` and ``tokens_per_image``

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; known: {', '.join(INTERPOLATIONS)}"
            )
        if self.side <= 0:
            raise ValueError(f"image side must be positive, got {self.side}")
        if self.patch_size and self.side % self.patch_size:
            raise ValueError(f"image side {self.side} is not a multiple of the patch size {self.patch_size}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @property
    def grid(self) -> int:
        """Patch tokens along each side of the input."""
        if not self.patch_size:
            raise ValueError("this transform has no patch size (resolve it from an encoder's spec)")
        return self.side // self.patch_size

    @property
    def tokens_per_image(self) -> int:
        return self.grid * self.grid

    def identity(self) -> dict[str, Any]:
        """Everything that decides the pixels (feature caches key on it)."""
        return {"v": TRANSFORM_VERSION, "side": self.side, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "resize": "short-side, centre-crop"}  # fmt: skip

    def geometry(self, height: int, width: int) -> CropGeometry:
        return crop_geometry(height, width, self.side)

    # --- images ---------------------------------------------------------------------------------------------

    def __call__(self, images: Sequence) -> torch.Tensor:
        """Images -> (n, 3, S, S) float32, normalised."""
        if not len(images):
            return torch.empty(0, 3, self.side, self.side)
        return torch.stack([self.normalize(self.resize_crop(im)) for im in images])

    def resize(self, image: Any) -> torch.Tensor:
        """An image -> (3, H', W') float32 in [0, 1], short side resized to S (no crop)."""
        t = to_tensor(image)
        return self._resize(t, self.geometry(t.shape[1], t.shape[2]))

    def resize_crop(self, image: Any) -> torch.Tensor:
        """An image -> (3, S, S) float32 in [0, 1] (not normalised)."""
        t = to_tensor(image)
        g = self.geometry(t.shape[1], t.shape[2])
        return self._resize(t, g)[:, g.top : g.top + self.side, g.left : g.left + self.side]

    def _resize(self, t: torch.Tensor, g: CropGeometry) -> torch.Tensor:  # (3, H, W) -> (3, H', W')
        if g.resized == g.size:
            return t
        out = F.interpolate(
            t[None], size=g.resized, mode=self.interpolation, antialias=True, align_corners=False
        )
        return out[0].clamp(0.0, 1.0)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(..., 3, H, W) in [0, 1] -> normalised with mean/std."""
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return (pixels - mean) / std

    # --- dense targets --------------------------------------------------------------------------------------

    def target(self, arr: np.ndarray) -> np.ndarray:
        """An (H, W[, ...]) target -> (S, S[, ...]) by nearest neighbour through the image's geometry, dtype kept."""
        g = self.geometry(arr.shape[0], arr.shape[1])
        rows = nearest_indices(arr.shape[0], g.resized[0], g.top, self.side)
        cols = nearest_indices(arr.shape[1], g.resized[1], g.left, self.side)
        return np.ascontiguousarray(arr[rows[:, None], cols[None, :]])

    def resize_target(self, arr: np.ndarray) -> np.ndarray:
        """An (H, W[, ...]) target -> (H', W'[, ...]): short side to S, nearest, no crop."""
        g = self.geometry(arr.shape[0], arr.shape[1])
        rows = nearest_indices(arr.shape[0], g.resized[0], 0, g.resized[0])
        cols = nearest_indices(arr.shape[1], g.resized[1], 0, g.resized[1])
        return np.ascontiguousarray(arr[rows[:, None], cols[None, :]])
