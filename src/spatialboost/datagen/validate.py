"""Dataset checks: schema, files, shard hashes, and every answer recomputed from the ground truth.

``validate_dataset(dir)`` returns a list of failures (empty = valid). Each answer's recorded fact is
recomputed with the named function of ``relations.FACTS`` on the ground-truth sidecar; its value and label
must match and the answer must contain the fact's ``expect`` strings (the facts cited in a rationale too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from spatialboost.datagen import templates as _templates  # noqa: F401  (registers the "caption" fact)
from spatialboost.datagen.dataset import (
    check_dataset_dir,
    iter_records,
    load_sample_gt,
    read_manifest,
    record_images,
    verify_shard,
)
from spatialboost.datagen.relations import SceneGraph, recompute, values_match
from spatialboost.errors import UserError
from spatialboost.io import resolve_inside


def check_schema(record: Any) -> list[str]:
    """LLaVA record schema: id, image(s), alternating human/gpt turns, one <image> per view up front."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return ["record without a string 'id'"]
    rid = record["id"]
    img = record.get("image")
    if not (isinstance(img, str) or (isinstance(img, list) and img and all(isinstance(p, str) for p in img))):
        return [f"{rid}: 'image' must be a path or a non-empty list of paths"]
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv or len(conv) % 2:
        return [f"{rid}: 'conversations' must be a non-empty list of human/gpt pairs"]
    errors = []
    for i, turn in enumerate(conv):
        want = "human" if i % 2 == 0 else "gpt"
        if not isinstance(turn, dict) or turn.get("from") != want or not isinstance(turn.get("value"), str):
            errors.append(f"{rid}: turn {i} must be {{'from': '{want}', 'value': str}}")
        elif not turn["value"].strip():
            errors.append(f"{rid}: turn {i} is empty")
    if errors:
        return errors
    n = len(record_images(record))
    if (
        not conv[0]["value"].startswith("<image>\n" * n)
        or sum(t["value"].count("<image>") for t in conv) != n
    ):
        errors.append(f"{rid}: the first human turn must start with exactly {n} '<image>' placeholder(s)")
    return errors


def check_fact(g: SceneGraph, fact: dict[str, Any], answer: str, where: str) -> list[str]:
    try:
        d = recompute(g, fact)
    except Exception as e:  # a malformed fact is a failure to report, not a crash
        return [f"{where}: cannot recompute fact {fact.get('fn')!r}: {e}"]
    errors = []
    if d.label is None or d.label != fact.get("label") or not values_match(d.value, fact.get("value")):
        errors.append(
            f"{where}: {fact['fn']} recomputes to {d.value!r}/{d.label!r}, recorded {fact.get('value')!r}/{fact.get('label')!r}"
        )
    for token in fact.get("expect", []):
        if token not in answer:
            errors.append(f"{where}: answer does not state {token!r}")
    for sub in fact.get("support", []):
        errors += check_fact(g, sub, answer, where + " (rationale)")
    return errors


def check_record(dataset_dir: Path, record: dict[str, Any]) -> list[str]:
    errors = check_schema(record)
    if errors:
        return errors
    rid = record["id"]
    try:
        for rel in record_images(record):
            with Image.open(resolve_inside(dataset_dir, rel)) as im:
                im.verify()
        scene = load_sample_gt(dataset_dir, record, load_rgb=False)
    except (OSError, ValueError, KeyError) as e:
        return [f"{rid}: unreadable image or ground truth ({e})"]
    answers = [t["value"] for t in record["conversations"][1::2]]
    facts = scene.meta["facts"]
    if len(facts) != len(answers) or len(scene.views) != len(record_images(record)):
        return [
            f"{rid}: {len(answers)} answers / {len(record_images(record))} images but {len(facts)} facts / {len(scene.views)} views"
        ]
    g = SceneGraph(scene)
    for i, (fact, answer) in enumerate(zip(facts, answers, strict=True)):
        errors += check_fact(g, fact, answer, f"{rid} turn {i + 1} ({fact.get('template')})")
    return errors


def validate_dataset(
    dataset_dir: str | Path, max_samples: int | None = None
) -> tuple[list[str], dict[str, int]]:
    """(failures, counts) for a dataset directory."""
    if max_samples is not None and max_samples < 1:
        raise UserError(f"--max-samples must be >= 1, got {max_samples} (leave it out to check every sample)")
    root = check_dataset_dir(dataset_dir)
    manifest = read_manifest(root)
    errors: list[str] = []
    if not manifest.get("complete"):
        c = manifest["counts"]
        errors.append(
            f"incomplete dataset: {c.get('shards')} of {c.get('shards_planned')} shards; rerun the generate command"
        )
    for entry in manifest["shards"]:
        state = verify_shard(root, entry["shard"])
        if state is None or state["hash"] != entry.get("hash"):
            errors.append(f"{entry['file']}: content hash mismatch (corrupt or modified shard)")
    counts = {"samples": 0, "turns": 0}
    seen: set[str] = set()
    for record in iter_records(root, errors):  # a line that is not JSON is listed in errors
        if max_samples is not None and counts["samples"] >= max_samples:
            break
        rid = record.get("id") if isinstance(record, dict) else None
        if rid is not None and rid in seen:
            errors.append(f"{rid}: duplicate id")
        seen.add(rid)
        errors += check_record(root, record)
        conv = record.get("conversations") if isinstance(record, dict) else None
        counts["samples"] += 1
        counts["turns"] += len(conv) // 2 if isinstance(conv, list) else 0
    return errors, counts
