"""SAM 2 (``Sam2Model``) prompted with detector boxes: one mask per box.

Preprocessing as transformers' ``Sam2ImageProcessor``: resize to 1024 x 1024 (no aspect preservation),
rescale to [0, 1], normalise with the ImageNet default mean/std. Boxes are scaled by (1024 / W, 1024 / H).
The image encoder runs batched; the prompt decoder runs per image (each has its own number of boxes).
Low-resolution mask logits are resized bilinearly to (H, W) and thresholded at 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from spatialboost.datagen.real.perception.base import SEGMENTERS, BackendConfig, batched
from spatialboost.datagen.real.perception.hf import Preprocess, load_model, transformers_module
from spatialboost.image_transform import IMAGENET_MEAN, IMAGENET_STD

DEFAULT_MODEL = "facebook/sam2.1-hiera-large"
DEFAULT_PREPROCESS = Preprocess(1024, 1024, IMAGENET_MEAN, IMAGENET_STD)


@SEGMENTERS.register("sam2")
class Sam2Segmenter:
    def __init__(self, cfg: BackendConfig) -> None:
        self.cfg = cfg
        model = cfg.model or DEFAULT_MODEL
        self.net = load_model(transformers_module().Sam2Model, model, cfg.device, cfg.dtype)
        self.preprocess = Preprocess.from_pretrained(model, DEFAULT_PREPROCESS)

    @torch.no_grad()
    def segment(
        self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], keys: Sequence[str] = ()
    ) -> list[np.ndarray]:
        masks: list[np.ndarray] = []
        pairs = list(zip(images, boxes, strict=True))
        for chunk in batched(pairs, self.cfg.batch_size):
            pixels = self.preprocess([img for img, _ in chunk]).to(self.cfg.device, self.net.dtype)
            embeddings = self.net.get_image_embeddings(pixels)  # list of (B, C, h, w), fine -> coarse
            for i, (img, img_boxes) in enumerate(chunk):
                masks.append(self._decode([e[i : i + 1] for e in embeddings], img.shape[:2], img_boxes))
        return masks

    def _decode(self, embeddings: list[torch.Tensor], hw: tuple[int, int], boxes: np.ndarray) -> np.ndarray:
        height, width = hw
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, height, width), bool)
        scale = np.array([self.preprocess.width / width, self.preprocess.height / height] * 2)
        prompt = torch.as_tensor(boxes * scale, dtype=self.net.dtype, device=self.cfg.device)[
            None
        ]  # (1, N, 4)
        out = self.net(image_embeddings=embeddings, input_boxes=prompt, multimask_output=False)
        logits = out.pred_masks[0, :, 0].float()  # (N, h, w)
        logits = F.interpolate(logits[:, None], size=(height, width), mode="bilinear", align_corners=False)[
            :, 0
        ]
        return (logits > 0).cpu().numpy()
