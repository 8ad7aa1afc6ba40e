"""Cheap diagnostics of why stage 3 moves (or does not move) the encoder.

- ``adapter_stats``: the dual-channel gates after training (sigmoid(a) = weight on the frozen ``Attn``;
  0.5 at the paper's zero init) and how far ``Attn+`` moved from ``Attn`` (relative Frobenius norm).
- ``loss_curve``: stage 3's logged losses (``metrics.jsonl``).
- ``answer_accuracy``: the stage-2 VLM's next-token accuracy on held-out pixel-level answers with the
  encoder before (Attn+ = Attn) and after stage 3 -- all answer tokens, and only the tokens holding digits.
- ``spatial_content``: how much spatial supervision a dataset's conversations carry: queried image points
  per image (every depth/3D value the LLM must predict is tied to one) against the S x S pixels a dense
  depth head sees, and the share of answer characters that are digits.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spatialboost.constants import LM_IGNORE_INDEX
from spatialboost.data.collate import PaddedCollator
from spatialboost.data.dataset import ConversationDataset, partners
from spatialboost.data.refs import Ref, annotate_question, ref_weights
from spatialboost.dataset_format import iter_records, read_instance, read_meta, record_images
from spatialboost.io import confined
from spatialboost.models.dual_channel import DualChannelAttention
from spatialboost.models.preprocess import preprocess_images
from spatialboost.train.checkpoint import load_weights
from spatialboost.train.data import dataset_options
from spatialboost.train.distributed import DistEnv
from spatialboost.train.pipeline import prepare_tokenizer
from spatialboost.train.stages import build_vlm, finished_output, load_previous_outputs, load_trainable

POINT = re.compile(r"\((\d+), (\d+)\)")


def adapter_stats(encoder: torch.nn.Module) -> dict[str, Any]:
    """Gate weight on the frozen channel and Attn+'s relative move, per dual-channel layer (mean too)."""

    alphas, moves = [], []
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, DualChannelAttention):
                alphas.append(float(module.alpha().mean()))
                base = dict(module.base.named_parameters())
                num = sum(float((p - base[n]).pow(2).sum()) for n, p in module.plus.named_parameters())
                den = sum(float(p.pow(2).sum()) for p in base.values())
                moves.append((num / max(den, 1e-12)) ** 0.5)
    if not alphas:
        return {}
    return {"alpha_frozen_mean": sum(alphas) / len(alphas), "alpha_frozen": alphas,
            "attn_plus_rel_change_mean": sum(moves) / len(moves), "attn_plus_rel_change": moves}  # fmt: skip


def weight_change(encoder: torch.nn.Module, base: torch.nn.Module) -> float:
    """Relative Frobenius change of every shared weight (full fine-tuning, simple FT)."""
    ref = {n: p.detach() for n, p in base.named_parameters()}
    num = den = 0.0
    for name, p in encoder.named_parameters():
        if name in ref and ref[name].shape == p.shape:
            num += float((p.detach() - ref[name]).pow(2).sum())
            den += float(ref[name].pow(2).sum())
    return (num / max(den, 1e-12)) ** 0.5


def loss_curve(stage_dir: Path) -> list[list[float]]:
    path = Path(stage_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[r["step"], r["loss"]] for r in rows if "loss" in r]


def spatial_content(dataset_dir: str | Path) -> dict[str, float]:
    """Points queried per image, digits share of the answers, turns and answer characters per sample."""

    images = points = turns = chars = digits = samples = 0
    for record in iter_records(dataset_dir):
        samples += 1
        images += len(record_images(record))
        conv = record["conversations"]
        text = " ".join(c["value"] for c in conv)
        points += len(set(POINT.findall(text)))
        answers = [c["value"] for c in conv if c["from"] == "gpt"]
        turns += len(answers)
        chars += sum(len(a) for a in answers)
        digits += sum(ch.isdigit() for a in answers for ch in a)
    return {"samples": samples, "images_per_sample": images / max(samples, 1),
            "points_per_image": points / max(images, 1), "turns_per_sample": turns / max(samples, 1),
            "answer_chars_per_sample": chars / max(samples, 1), "digit_share": digits / max(chars, 1)}  # fmt: skip


def answer_accuracy(
    cfg, dataset_dir: str | Path, after_stage3: bool, batch_size: int = 8, shuffle_images: bool = False
) -> dict[str, float]:
    """Next-token accuracy/loss of the stage-3 VLM (LLM from stage 2) on held-out answers (``cfg``: the run).

    ``shuffle_images``: each conversation gets the next sample's image (single-view data) -- how much of
    the answer the LLM reads from the image at all.
    """

    tok = prepare_tokenizer(cfg, DistEnv())  # the run's tokenizer, reference tokens included
    vlm = build_vlm(cfg, tok, "encoder")
    load_previous_outputs(vlm, cfg, "encoder")
    if after_stage3:
        load_trainable(vlm, load_weights(finished_output(cfg.run_dir, "encoder")))
    vlm.eval()
    data = ConversationDataset(dataset_dir, tok, **dataset_options(cfg.data, vlm))
    collate = PaddedCollator(tok.pad_token_id)
    digit_ids = torch.tensor([any(ch.isdigit() for ch in tok.decode([i])) for i in range(len(tok))])
    totals = torch.zeros(5, dtype=torch.float64)  # loss sum, tokens, correct, digit tokens, digit correct
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
            batch.pop("ids", None)
            if shuffle_images:
                batch["pixel_values"] = torch.roll(batch["pixel_values"], 1, dims=0)
            out = vlm(**batch)
            totals += _token_counts(
                out.logits, batch["labels"], digit_ids, float(out.loss) * out.num_label_tokens
            )
    loss_sum, n, correct, n_digit, digit_correct = totals.tolist()
    return {"loss": loss_sum / n, "token_acc": correct / n, "digit_acc": digit_correct / max(n_digit, 1),
            "answer_tokens": n, "digit_tokens": n_digit}  # fmt: skip


def _token_counts(logits: torch.Tensor, labels: torch.Tensor, digit_ids: torch.Tensor, loss_sum: float):
    targets = labels[:, 1:]
    pred = logits[:, :-1].argmax(-1)
    keep = targets != LM_IGNORE_INDEX
    hit = (pred == targets) & keep
    is_digit = torch.zeros_like(keep)
    is_digit[keep] = digit_ids[targets[keep].clamp_max(len(digit_ids) - 1)]
    return torch.tensor(
        [loss_sum, keep.sum(), hit.sum(), is_digit.sum(), (hit & is_digit).sum()], dtype=torch.float64
    )


# --- rung 1 of the reading ladder: what the frozen features can answer ------------------------------------------


@dataclass(frozen=True)
class RecordFeatures:
    """A dataset's records, each one's frozen patch features (views flattened, at ``side`` px) and its swap
    partner (another sample with as many views, as the image gain uses): computed once, read by every rung-1
    probe."""

    root: Path
    side: int
    records: list[dict]
    feats: list[torch.Tensor]
    other: list[int]


def record_features(encoder, dataset_dir: str | Path, side: int) -> RecordFeatures:
    """The frozen features of every record of ``dataset_dir`` (one encoder pass per record)."""
    from PIL import Image

    records = list(iter_records(dataset_dir))
    feats = []
    with torch.no_grad():
        for record in records:
            images = []
            for rel in record_images(record):
                with Image.open(confined(dataset_dir, rel)) as im:
                    images.append(im.convert("RGB"))
            feats.append(
                encoder.forward_features(preprocess_images(images, encoder.spec, side)).patch.flatten(0, 1)
            )
    other = partners([len(record_images(r)) for r in records])
    return RecordFeatures(Path(dataset_dir), side, records, feats, other)


def _pool(feats: torch.Tensor, weights: tuple) -> torch.Tensor:
    cols, vals = weights
    return (torch.from_numpy(vals)[:, None] * feats[torch.from_numpy(cols)]).sum(0)


def choice_items(data: RecordFeatures, grid: int) -> list[dict[str, Any]]:
    """Every balanced A/B question of a dataset: the frozen features of its two places (right images and
    another sample's with as many views), the answer and the template."""
    feats, other, side = data.feats, data.other, data.side
    items = []
    for i, record in enumerate(data.records):
        meta = read_meta(data.root, record["id"])
        questions = [c["value"] for c in record["conversations"] if c["from"] == "human"]
        for fact, question in zip(meta["facts"], questions, strict=False):
            if not fact.get("choices"):
                continue
            _, refs = annotate_question(question, fact, meta["sizes"], meta["objects"], ("point", "region"))
            if len(refs) != 2:
                continue
            weights = ref_weights(refs, meta["sizes"], read_instance(data.root, record["id"]), side, grid)
            pooled = [[_pool(f, w) for w in weights] for f in (feats[i], feats[other[i]])]
            items.append({"right": torch.cat(pooled[0]), "other": torch.cat(pooled[1]),
                          "label": float(fact["answer_choice"] == "A"), "template": fact.get("template", "")})  # fmt: skip
    return items


def depth_facts(fact: dict) -> list[dict]:
    """Every ``depth_at`` fact in ``fact`` and its rationale (support), depth-first."""
    own = [fact] if fact.get("fn") == "depth_at" and isinstance(fact.get("value"), int | float) else []
    return own + [d for s in fact.get("support", []) for d in depth_facts(s)]


def depth_items(data: RecordFeatures, grid: int) -> list[dict[str, Any]]:
    """Every distinct point whose depth a conversation states: its frozen feature (bilinear at the point;
    right images and another sample's), its coordinates in [0, 1] (what the text gives) and the depth."""
    feats, other = data.feats, data.other
    items = []
    for i, record in enumerate(data.records):
        meta = read_meta(data.root, record["id"])
        points = {}
        for fact in meta["facts"]:
            for d in depth_facts(fact):
                a = d["args"]
                points[(int(a.get("view", 0)), float(a["x"]), float(a["y"]))] = float(d["value"])
        for (view, x, y), depth in points.items():
            (w,) = ref_weights([Ref("point", view, x, y)], meta["sizes"], None, data.side, grid)
            width, height = meta["sizes"][view]
            items.append({"right": _pool(feats[i], w), "other": _pool(feats[other[i]], w),
                          "coords": torch.tensor([x / width, y / height]), "depth": depth})  # fmt: skip
    return items


def choice_probe(
    train_data: RecordFeatures, eval_data: RecordFeatures, grid: int, steps: int = 2000, seed: int = 0
) -> dict:
    """Rung 1: an MLP on the two places' frozen features answers the A/B questions (held-out accuracy with
    the right images and with another scene's): the upper bound of what the image tokens carry for them."""
    train, test = choice_items(train_data, grid), choice_items(eval_data, grid)
    if not train or not test:
        return {}
    gen = torch.Generator().manual_seed(seed)
    x = torch.stack([t["right"] for t in train])
    y = torch.tensor([t["label"] for t in train])
    mu, sd = x.mean(0), x.std(0) + 1e-6
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, 1))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(steps):
        idx = torch.randint(len(x), (64,), generator=gen)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net((x[idx] - mu) / sd)[:, 0], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    out: dict[str, Any] = {"train_questions": len(train), "test_questions": len(test)}
    with torch.no_grad():
        for key in ("right", "other"):
            pred = net((torch.stack([t[key] for t in test]) - mu) / sd)[:, 0] > 0
            hits = [bool(p) == bool(t["label"]) for p, t in zip(pred.tolist(), test, strict=True)]
            out[f"acc_{key}"] = sum(hits) / len(hits)
            for name in sorted({t["template"] for t in test}):
                sel = [h for h, t in zip(hits, test, strict=True) if t["template"] == name]
                out.setdefault("per_template", {}).setdefault(name, {})[f"acc_{key}"] = sum(sel) / len(sel)
    return out


def _gaussian_nll(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-item negative log-likelihood (nats) of ``y`` under N(out[:, 0], exp(out[:, 1]))."""
    mean, log_sd = out[:, 0], out[:, 1].clamp(-7, 5)
    return 0.5 * math.log(2 * math.pi) + log_sd + 0.5 * ((y - mean) / log_sd.exp()) ** 2


def _fit_gaussian(x: torch.Tensor, y: torch.Tensor, steps: int, seed: int):
    """An MLP giving a mean and a log-std for each row of ``x``, trained on 80% of the rows and stopped at
    its best negative log-likelihood on the other 20% (checked every 50 steps): a probe that may overfit
    should not understate the bound. Returns a function of new rows -> (N, 2) mean and log-std in metres."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=gen)
    val, fit = order[: len(x) // 5], order[len(x) // 5 :]
    mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-6
    y_mu, y_sd = float(y[fit].mean()), float(y[fit].std()) + 1e-6
    z, t = (x - mu) / sd, (y - y_mu) / y_sd
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, 2))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    best, best_state = math.inf, copy.deepcopy(net.state_dict())
    for step in range(1, steps + 1):
        idx = fit[torch.randint(len(fit), (64,), generator=gen)]
        loss = _gaussian_nll(net(z[idx]), t[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps:
            with torch.no_grad():
                val_nll = float(_gaussian_nll(net(z[val]), t[val]).mean())
            if val_nll < best:
                best, best_state = val_nll, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)

    def predict(rows: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = net((rows - mu) / sd)
        return torch.stack([out[:, 0] * y_sd + y_mu, out[:, 1] + math.log(y_sd)], 1)

    return predict


def depth_value_probe(
    train_data: RecordFeatures, eval_data: RecordFeatures, grid: int, steps: int = 2000, seed: int = 0
) -> dict:
    """Rung 1 for the numbers: how many nats per stated depth the frozen features can save at most.

    Two Gaussian MLPs predict each queried point's depth on held-out scenes: one from the point's
    coordinates alone (all the text gives about it), one from the coordinates and the point's frozen feature.
    The difference of their negative log-likelihoods is the information the image adds per stated depth;
    divided by the tokens a depth is printed with ("2.94": 4) it bounds the image gain a stage-2 VLM on these
    features can reach on those tokens (``pixel_numbers`` in the image gain). Also: the feature model fed
    another scene's feature at the same point, and each model's RMSE."""
    train, test = depth_items(train_data, grid), depth_items(eval_data, grid)
    return depth_bound(train, test, steps, seed) if train and test else {}


def depth_bound(train: list[dict], test: list[dict], steps: int = 2000, seed: int = 0) -> dict:
    """``depth_value_probe`` on items {"coords", "right", "other", "depth"} (see ``depth_items``)."""
    y, y_test = torch.tensor([t["depth"] for t in train]), torch.tensor([t["depth"] for t in test])
    coords, coords_test = torch.stack([t["coords"] for t in train]), torch.stack([t["coords"] for t in test])
    text_only = _fit_gaussian(coords, y, steps, seed)
    seeing = _fit_gaussian(torch.cat([coords, torch.stack([t["right"] for t in train])], 1), y, steps, seed)
    preds = {"text_only": text_only(coords_test)}
    for key in ("right", "other"):
        preds[key] = seeing(torch.cat([coords_test, torch.stack([t[key] for t in test])], 1))
    out: dict[str, Any] = {"train_points": len(train), "test_points": len(test)}
    nll = {k: _gaussian_nll(p, y_test) for k, p in preds.items()}
    for key, p in preds.items():
        out[f"nll_{key}"] = float(nll[key].mean())
        out[f"rmse_{key}"] = float(((p[:, 0] - y_test) ** 2).mean().sqrt())
    saved = nll["text_only"] - nll["right"]
    out["nats_per_value"] = float(saved.mean())
    out["nats_per_value_stderr"] = float(saved.std() / math.sqrt(len(saved)))
    out["tokens_per_value"] = sum(len(f"{t['depth']:.2f}") for t in test) / len(test)
    out["nats_per_value_token"] = out["nats_per_value"] / out["tokens_per_value"]
    return out
