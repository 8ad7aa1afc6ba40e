"""Open-vocabulary detectors: OWLv2 (``Owlv2ForObjectDetection``) and Grounding DINO.

Both use transformers' own image processors (they have PIL fallbacks, so no torchvision is needed) and the
checkpoint's tokenizer (OWLv2: CLIP; Grounding DINO: BERT). Output: boxes xyxy in original-image pixels, the
best-matching vocabulary label and its score, thresholded and class-agnostically NMS-ed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from spatialboost.datagen.real.perception.base import (
    DETECTORS,
    BackendConfig,
    Detection,
    batched,
    non_max_suppression,
)
from spatialboost.datagen.real.perception.hf import load_model, transformers_module


def _cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    cx, cy, w, h = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def _clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.clip(boxes, 0, [width, height, width, height])


class _PromptedDetector:
    """What both detectors share: a transformers detection model, its image processor and tokenizer, and
    one forward pass of a chunk of images against one tokenised prompt."""

    def __init__(self, cfg: BackendConfig, model_class: type, default_model: str) -> None:
        self.cfg = cfg
        model = cfg.model or default_model
        self.net = load_model(model_class, model, cfg.device, cfg.dtype)
        transformers = transformers_module()
        self.image_processor = transformers.AutoImageProcessor.from_pretrained(model)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(model)

    def _forward(self, chunk: Sequence[np.ndarray], text: dict, pixel_mask: bool = False):
        """The net on ``chunk`` (uint8 RGB images), the prompt ``text`` (1, L) repeated for each image."""
        pixels = self.image_processor(images=[Image.fromarray(im) for im in chunk], return_tensors="pt")
        n = len(chunk)
        inputs = dict(
            input_ids=text["input_ids"].repeat(n, 1).to(self.cfg.device),
            attention_mask=text["attention_mask"].repeat(n, 1).to(self.cfg.device),
            pixel_values=pixels["pixel_values"].to(self.cfg.device, self.net.dtype),
        )
        if pixel_mask:
            inputs["pixel_mask"] = pixels["pixel_mask"].to(self.cfg.device)
        return self.net(**inputs)


@DETECTORS.register("owlv2")
class Owlv2Detector(_PromptedDetector):
    """OWLv2: each vocabulary word is a text query; boxes are relative to the image padded to a square."""

    def __init__(self, cfg: BackendConfig) -> None:
        super().__init__(
            cfg, transformers_module().Owlv2ForObjectDetection, "google/owlv2-base-patch16-ensemble"
        )

    @torch.no_grad()
    def detect(
        self, images: Sequence[np.ndarray], vocabulary: Sequence[str], keys: Sequence[str] = ()
    ) -> list[list[Detection]]:
        queries = [f"a photo of a {w}" for w in vocabulary]
        text = self.tokenizer(
            queries, padding="max_length", truncation=True, max_length=16, return_tensors="pt"
        )
        results: list[list[Detection]] = []
        for chunk in batched(list(images), self.cfg.batch_size):
            out = self._forward(chunk, text)
            scores = torch.sigmoid(out.logits.float()).cpu().numpy()  # (B, P, Q)
            boxes = out.pred_boxes.float().cpu().numpy()  # (B, P, 4) cxcywh in [0, 1] of the padded square
            for i, img in enumerate(chunk):
                h, w = img.shape[:2]
                xyxy = _clip_boxes(_cxcywh_to_xyxy(boxes[i]) * max(h, w), w, h)
                results.append(self._select(xyxy, scores[i], vocabulary))
        return results

    def _select(self, xyxy: np.ndarray, scores: np.ndarray, vocabulary: Sequence[str]) -> list[Detection]:
        label_idx, best = scores.argmax(-1), scores.max(-1)
        dets = [
            Detection(xyxy[p], vocabulary[label_idx[p]], float(best[p]))
            for p in np.nonzero(best >= self.cfg.threshold)[0]
            if xyxy[p, 2] - xyxy[p, 0] >= 1 and xyxy[p, 3] - xyxy[p, 1] >= 1
        ]
        return non_max_suppression(dets, limit=self.cfg.max_detections)


@DETECTORS.register("grounding-dino")
class GroundingDinoDetector(_PromptedDetector):
    """Grounding DINO: the vocabulary is one prompt "a. b. c."; a query's label is the phrase whose tokens score
    highest (max over the phrase's tokens), its score the query's best token score."""

    def __init__(self, cfg: BackendConfig) -> None:
        super().__init__(
            cfg, transformers_module().GroundingDinoForObjectDetection, "IDEA-Research/grounding-dino-base"
        )

    def _prompt(self, vocabulary: Sequence[str]) -> tuple[dict, list[list[int]]]:
        """Token ids of "w1. w2. ..." and, per word, the token positions of its phrase."""
        ids: list[int] = [self.tokenizer.cls_token_id]
        spans: list[list[int]] = []
        dot = self.tokenizer.convert_tokens_to_ids(".")
        for word in vocabulary:
            toks = self.tokenizer(word, add_special_tokens=False)["input_ids"]
            spans.append(list(range(len(ids), len(ids) + len(toks))))
            ids += toks + [dot]
        ids.append(self.tokenizer.sep_token_id)
        max_len = int(self.net.config.max_text_len)
        if len(ids) > max_len:
            raise ValueError(
                f"vocabulary too long for Grounding DINO ({len(ids)} > {max_len} tokens); split it"
            )
        input_ids = torch.tensor([ids])
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}, spans

    @torch.no_grad()
    def detect(
        self, images: Sequence[np.ndarray], vocabulary: Sequence[str], keys: Sequence[str] = ()
    ) -> list[list[Detection]]:
        results: list[list[Detection]] = []
        for words in batched(list(vocabulary), int(self.cfg.options.get("words_per_prompt", 40))):
            text, spans = self._prompt(words)
            for j, chunk in enumerate(batched(list(images), self.cfg.batch_size)):
                per_image = self._detect_chunk(chunk, text, spans, words)
                for i, dets in enumerate(per_image):
                    idx = j * self.cfg.batch_size + i
                    if idx < len(results):
                        results[idx].extend(dets)
                    else:
                        results.append(dets)
        return [non_max_suppression(d, limit=self.cfg.max_detections) for d in results]

    def _detect_chunk(self, chunk, text, spans, words) -> list[list[Detection]]:
        out = self._forward(chunk, text, pixel_mask=True)
        token_scores = torch.sigmoid(out.logits.float()).cpu().numpy()  # (B, Q, max_text_len)
        boxes = out.pred_boxes.float().cpu().numpy()  # (B, Q, 4) cxcywh in [0, 1] of the image
        per_word = np.stack([token_scores[..., s].max(-1) for s in spans], axis=-1)  # (B, Q, V)
        results = []
        for i, img in enumerate(chunk):
            h, w = img.shape[:2]
            xyxy = _clip_boxes(_cxcywh_to_xyxy(boxes[i]) * [w, h, w, h], w, h)
            best, label = per_word[i].max(-1), per_word[i].argmax(-1)
            keep = np.nonzero(best >= self.cfg.threshold)[0]
            results.append([Detection(xyxy[q], words[label[q]], float(best[q])) for q in keep])
        return results
