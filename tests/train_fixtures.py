"""Tiny LLaVA-format datasets and configs for the training tests (no scene engine needed, seconds to make).

The records are written the way the data engine writes them (``spatialboost.dataset_format``'s
``commit_shard`` and ``write_manifest``: ``shards/shard-00000.jsonl``, a completion record, a manifest),
so the readers under test see the layout they see in use.

Each image is a 32x32 canvas with one coloured square on the left or the right; the answers name the
colour and the side, so a tiny VLM can overfit them. Multi-view samples hold two images.
"""

from __future__ import annotations

import contextlib
import random
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spatialboost.dataset_format import FORMAT, commit_shard, record_images, write_manifest
from spatialboost.io import sha256_file

# `spatialboost train` on the dataclass defaults alone (without --config it runs the `spatialboost` recipe)
TRAIN_BARE = ["train", "--config", str(Path(__file__).with_name("bare.yaml"))]

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def make_dataset(root: Path, n: int = 24, seed: int = 0, multi_every: int = 3) -> Path:
    """A dataset of ``n`` records + ``root/img/*.png``; every ``multi_every``-th sample is multi-view."""
    rng = random.Random(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        views = 2 if multi_every and i % multi_every == 0 else 1
        images, facts = [], []
        for v in range(views):
            colour, side = rng.choice(sorted(COLOURS)), rng.choice(["left", "right"])
            canvas = np.full((32, 32, 3), 245, np.uint8)
            x0 = 2 if side == "left" else 18
            canvas[10:22, x0 : x0 + 12] = COLOURS[colour]
            name = f"img/{i:04d}_{v}.png"
            Image.fromarray(canvas).save(root / name)
            images.append(name)
            facts.append((colour, side))
        placeholders = "\n".join("<image>" for _ in images)
        turns = [
            {"from": "human", "value": f"{placeholders}\nWhat colour is the square?"},
            {"from": "gpt", "value": " and ".join(c for c, _ in facts)},
            {"from": "human", "value": "Which side is it on?"},
            {"from": "gpt", "value": " and ".join(f"the {s}" for _, s in facts)},
        ]
        records.append(
            {"id": f"s{i:04d}", "image": images if views > 1 else images[0], "conversations": turns}
        )
    return write_records(root, records)


def write_records(root: Path, records: list[dict], source: str = "tests") -> Path:
    """``records`` (their images already under ``root``) as one shard + manifest, through the engine's writer."""
    paths = [rel for r in records for rel in record_images(r)]
    files = {rel: sha256_file(root / rel) for rel in paths if (root / rel).is_file()}
    commit_shard(root, 0, (0, len(records)), records, files, len(paths), {})
    config = {
        "format": FORMAT,
        "source": source,
        "num_samples": len(records),
        "seed": 0,
        "shard_size": len(records),
    }
    write_manifest(root, config)
    return root


def tiny_overrides(run_dir: Path, data: Path, steps: int = 4, every: int = 2, batch: int = 4) -> list[str]:
    """Config overrides for a seconds-long run of the three stages on the tiny models."""
    return [
        f"run_dir={run_dir}",
        f"data.datasets=[{data}]",
        "data.max_length=256",
        "model.encoder=tiny-dinov2",
        "model.tokenizer_vocab_size=300",
        f"checkpoint.every={every}",
        "checkpoint.keep_last=2",
        "log.every=1",
        "log.tensorboard=false",
        "log.progress=false",
        *[f"stages.{s}.max_steps={steps}" for s in ("align", "instruct", "encoder")],
        *[f"stages.{s}.batch_size={batch}" for s in ("align", "instruct", "encoder")],
    ]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest (and steadiest on a shared 2-core box) on one thread; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextlib.contextmanager
def busy_cpu():
    """A thread doing matmuls beside the test (as a loaded host does): it makes threaded kernels whose
    result depends on timing (unordered atomic adds) come out differently from run to run."""
    stop = threading.Event()

    def spin() -> None:
        a = torch.randn(256, 256)
        while not stop.is_set():
            a = torch.tanh(a @ a)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
