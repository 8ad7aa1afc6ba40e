"""The dataset format, owned here: layout, record schema, the manifest, and the one writer and reader of them.

The data engine (``datagen``) writes datasets through ``commit_shard`` and ``write_manifest``; training and
probing (``data``, ``train``, ``eval``) and ``spatialboost validate`` read them through ``read_manifest``
and ``iter_records``, which follow the manifest (never a glob of whatever files lie in the folder).

Layout of a dataset directory::

    config.json                 the resolved config that made it (a different config is refused)
    manifest.json               counts, config, seed, a content hash per complete shard, versions, timestamps
    shards/shard-XXXXX.jsonl    LLaVA records, one per line (below)
    images/<id>_v<k>.png        view k of sample <id> (deterministic PNG, no metadata)
    gt/<id>.npz                 ground truth: depth (V,H,W) f32, instance (V,H,W) i32, semantic (V,H,W) u8,
                                K (V,3,3), cam_to_world (V,4,4), meta = JSON (objects, classes, facts) as bytes
    state/shard-XXXXX.json      completion record of a shard: its files' hashes and the shard hash

A shard is complete only when its completion record exists and every hash in it matches; the manifest lists
the complete shards. Paths inside records and the manifest are relative to the dataset directory and are
resolved with ``io.confined`` (nothing outside the dataset root is read): a manifest entry that leads outside
is reported like an unreadable shard, a record's image like that is skipped by its reader.

Record schema (LLaVA)::

    {"id": str,
     "image": str | [str, ...],      # one path, or a list in every record of a dataset that may hold
                                     # multi-view samples (one Arrow type per column for `datasets`)
     "conversations": [{"from": "human" | "gpt", "value": str}, ...]}   # <image> placeholders in turn 1
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import PIL

import spatialboost
from spatialboost.errors import UserError
from spatialboost.io import UnsafePathError, atomic_write_bytes, atomic_write_json, confined, sha256_bytes

FORMAT = "spatialboost-cot/1"
MANIFEST = "manifest.json"


def shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def record_images(record: dict[str, Any]) -> list[str]:
    """The record's image paths as a list (``image`` may be a string, a list, or missing)."""
    image = record.get("image")
    if image is None:
        return []
    return [image] if isinstance(image, str) else list(image)


# ----------------------------------------------------------------------------------------------- writing


def shard_hash(files: dict[str, str]) -> str:
    """Content hash of a shard: over its files' relative paths and sha256s, in path order."""
    return sha256_bytes("".join(f"{p}\n{h}\n" for p, h in sorted(files.items())).encode())


def commit_shard(
    out: Path,
    k: int,
    samples: tuple[int, int],
    records: list[dict[str, Any]],
    files: dict[str, str],
    views: int,
    turns_per_level: dict[str, int],
) -> dict[str, Any]:
    """Write shard ``k``'s JSONL, then its completion record (last); returns the record.

    ``files``: relative path -> sha256 of the sample files the caller already wrote (images, sidecars);
    ``samples``: the shard's [start, end) sample indices."""
    hashes = dict(files)
    jsonl = ("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n").encode("utf-8")
    rel = f"shards/{shard_name(k)}.jsonl"
    atomic_write_bytes(out / rel, jsonl)
    hashes[rel] = sha256_bytes(jsonl)
    state = {
        "shard": k,
        "file": rel,
        "samples": list(samples),
        "views": views,
        "turns_per_level": dict(sorted(turns_per_level.items())),
        "files": dict(sorted(hashes.items())),
        "hash": shard_hash(hashes),
    }
    atomic_write_json(out / "state" / f"{shard_name(k)}.json", state)
    return state


def write_manifest(
    out: Path, config: dict[str, Any], started: float | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Aggregate the completion records of all complete shards into ``manifest.json``.

    ``config`` needs ``num_samples``, ``shard_size`` and ``seed`` (the engine's resolved config)."""
    num_shards = -(-config["num_samples"] // config["shard_size"])
    shards, levels, samples, views = [], {}, 0, 0
    for k in range(num_shards):
        path = out / "state" / f"{shard_name(k)}.json"
        if not path.exists():
            continue
        st = json.loads(path.read_text())
        n = st["samples"][1] - st["samples"][0]
        shards.append({"shard": k, "file": st["file"], "hash": st["hash"], "samples": n})
        samples, views = samples + n, views + st["views"]
        for lv, c in st["turns_per_level"].items():
            levels[lv] = levels.get(lv, 0) + c
    manifest = {
        "format": FORMAT,
        "complete": len(shards) == num_shards,
        "counts": {
            "samples": samples,
            "samples_planned": config["num_samples"],
            "shards": len(shards),
            "shards_planned": num_shards,
            "views": views,
            "turns": sum(levels.values()),
            "turns_per_level": dict(sorted(levels.items())),
        },
        "seed": config["seed"],
        "config": config,
        "shards": shards,
        "software": _versions(),
        "timestamps": {"started": started, "written": time.time()},
        **(extra or {}),
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _versions() -> dict[str, str]:
    return {
        "spatialboost": spatialboost.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


# ----------------------------------------------------------------------------------------------- reading


def check_dataset_dir(dataset_dir: str | Path) -> Path:
    """``dataset_dir`` as a Path; UserError (one line) when it is missing or not a directory."""
    root = Path(dataset_dir)
    if not root.is_dir():
        what = "exists and is not a directory" if root.exists() else "no such dataset directory"
        raise UserError(f"{root}: {what} (a dataset is the folder `spatialboost generate --out` writes; the "
                        "default training recipe's: `spatialboost generate synthetic --recipe spatialboost --out data`)")  # fmt: skip
    return root


def read_manifest(dataset_dir: str | Path) -> dict[str, Any]:
    """The manifest; UserError naming the file when it is missing, not JSON, or lacks its shard list."""
    path = check_dataset_dir(dataset_dir) / MANIFEST
    rerun = "rerun the same `spatialboost generate` command to rewrite it from the completed shards"
    if not path.is_file():
        raise UserError(f"{path}: missing; is this a dataset made by `spatialboost generate`? If so, {rerun}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); {rerun}") from None
    ok = isinstance(manifest, dict) and isinstance(manifest.get("counts"), dict)
    shards = manifest.get("shards") if ok else None
    if not isinstance(shards, list) or not all(
        isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("shard"), int)
        for e in shards
    ):
        raise UserError(f"{path}: not a SpatialBoost manifest (no 'counts' or 'shards' list); {rerun}")
    return manifest


def shard_files(dataset_dir: str | Path) -> list[Path]:
    """The JSONL files of the complete shards the manifest lists, in sample order (an entry leading outside
    the dataset is left out here; ``iter_records`` reports it)."""
    files = []
    for entry in read_manifest(dataset_dir)["shards"]:
        try:
            files.append(confined(dataset_dir, entry["file"]))
        except UnsafePathError:
            continue
    return files


def iter_records(dataset_dir: str | Path, errors: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every LLaVA record of the complete shards listed in the manifest, in sample order.

    A line that is not valid JSON raises UserError naming the shard file and the line; with ``errors`` given,
    the message is appended there instead and reading goes on (``validate`` lists it as a failure)."""
    for entry in read_manifest(dataset_dir)["shards"]:
        try:
            path = confined(dataset_dir, entry["file"])
        except UnsafePathError as e:
            _bad_line(f"{entry['file']}: manifest entry refused ({e.reason})", errors)
            continue
        try:
            f = open(path, "rb")  # bytes: a line of bad UTF-8 is one bad line, not a crash mid-file
        except OSError as e:
            _bad_line(f"{entry['file']}: unreadable shard ({e.strerror or e})", errors)
            continue
        with f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except ValueError as e:
                    _bad_line(f"{entry['file']} line {number}: not a valid JSON record ({e})", errors)


def read_records(dataset_dir: str | Path) -> list[dict[str, Any]]:
    """``iter_records`` as a list; UserError naming the folder when its manifest lists no records."""
    records = list(iter_records(dataset_dir))
    if not records:
        raise UserError(
            f"{dataset_dir}: the manifest lists no records (is the dataset still being generated?)"
        )
    return records


def _bad_line(message: str, errors: list[str] | None) -> None:
    if errors is None:
        raise UserError(message + "; run `spatialboost validate` on the dataset, or regenerate the shard")
    errors.append(message)


def load_gt_arrays(dataset_dir: str | Path, sample: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of a sample's ground-truth sidecar."""
    path = confined(dataset_dir, f"gt/{sample}.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    return arrays, meta


def read_meta(dataset_dir: str | Path, sample: str) -> dict[str, Any] | None:
    """The sidecar's metadata (facts, objects, sizes) of a sample, or None without a sidecar."""
    path = confined(dataset_dir, f"gt/{sample}.npz")
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return json.loads(z["meta"].tobytes().decode("utf-8"))


def read_instance(dataset_dir: str | Path, sample: str) -> np.ndarray | None:
    """(V, H, W) instance ids of a sample's views from its sidecar, or None."""
    path = confined(dataset_dir, f"gt/{sample}.npz")
    with np.load(path, allow_pickle=False) as z:
        return z["instance"] if "instance" in z.files else None
