"""Source-agnostic, resumable, sharded writer and reader of spatial CoT datasets.

The layout, record schema and manifest are ``spatialboost.dataset_format``'s (its ``commit_shard`` and
``write_manifest`` write them here).

A shard is complete only when its record exists and every hash in it matches: files are written to a temp
file and renamed (``spatialboost.io``), the record last. On a rerun, complete shards are kept, anything
else (missing, truncated, corrupt) is regenerated. Sample ``i`` draws only from ``sample_seed(seed, i)``,
so the bytes do not depend on ``--shard i/n`` or ``--workers``. ``"image"`` is a list of paths in every
record of a dataset that may hold multi-view samples and a single path otherwise (one Arrow type per column,
so ``datasets.load_dataset("json", ...)`` reads it).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import multiprocessing as mp
import os
import pickle
import queue
import random
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from spatialboost.config import to_dict
from spatialboost.datagen.questions.conversations import ConversationConfig, build_conversation, to_llava
from spatialboost.datagen.questions.relations import SceneGraph
from spatialboost.datagen.scenes.scene import Camera, Scene, SceneObject, View
from spatialboost.dataset_format import (
    FORMAT,
    commit_shard,
    load_gt_arrays,
    record_images,
    shard_hash,
    shard_name,
    write_manifest,
)
from spatialboost.errors import UserError
from spatialboost.io import atomic_write_json, confined, sha256_bytes, sha256_file

log = logging.getLogger(__name__)


class SampleSource(Protocol):
    """Where scenes come from (synthetic engine, real photos, ...). Must be picklable for workers."""

    name: str
    multiview: bool  # may samples have more than one view

    def config(
        self,
    ) -> dict[str, Any]: ...  # what identifies the data (part of the refused-if-different config)

    def make_scene(self, index: int, seed: int, sample_id: str) -> Scene: ...


@dataclass(frozen=True)
class WriteSpec:
    out: Path
    num_samples: int
    seed: int
    shard_size: int
    conversation: ConversationConfig

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size)


def sample_seed(base_seed: int, index: int) -> int:
    """Per-sample seed: a hash of (base seed, sample index), independent of sharding and workers."""
    digest = hashlib.sha256(f"spatialboost:{base_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_id(index: int) -> str:
    return f"{index:08d}"


# ----------------------------------------------------------------------------------------------- encoding


def encode_png(rgb: np.ndarray) -> bytes:
    """Deterministic PNG bytes (fixed compression, no metadata or timestamps)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=1, optimize=False)
    return buf.getvalue()


def encode_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` readable by ``np.load(allow_pickle=False)`` with fixed zip timestamps (byte-deterministic)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            body = io.BytesIO()
            np.lib.format.write_array(body, np.asarray(arr), allow_pickle=False)
            zf.writestr(info, body.getvalue(), compresslevel=1)
    return buf.getvalue()


def _json_default(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def _object_json(o: SceneObject) -> dict[str, Any]:
    return {
        "id": o.id,
        "name": o.name,
        "description": o.description,
        "color": o.color,
        "centroid": o.centroid,
        "aabb_min": o.aabb_min,
        "aabb_max": o.aabb_max,
        "obb_center": o.obb_center,
        "obb_extent": o.obb_extent,
        "obb_rotation": o.obb_rotation,
        "solid": o.solid,
        "visible_pixels": o.visible_pixels,
        "attributes": o.attributes,
    }


def gt_arrays(scene: Scene, facts: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The ground-truth sidecar of a sample (maps a source lacks are omitted)."""
    views = scene.views
    arrays: dict[str, np.ndarray] = {
        "K": np.stack([v.camera.K for v in views]).astype(np.float64),
        "cam_to_world": np.stack([v.camera.cam_to_world for v in views]).astype(np.float64),
    }
    for key, dtype in (("depth", np.float32), ("instance", np.int32), ("semantic", np.uint8)):
        maps = [getattr(v, key) for v in views]
        if all(x is not None for x in maps):
            arrays[key] = np.stack(maps).astype(dtype)
    meta = {
        "scene_id": scene.scene_id,
        "source": scene.source,
        "sizes": [[v.camera.width, v.camera.height] for v in views],
        "semantic_classes": scene.semantic_classes,
        "objects": [_object_json(o) for o in scene.objects],
        "facts": facts,
        "scene_meta": scene.meta,
    }
    text = json.dumps(meta, default=_json_default, sort_keys=True)
    arrays["meta"] = np.frombuffer(text.encode("utf-8"), np.uint8)
    return arrays


# ----------------------------------------------------------------------------------------------- one shard


def make_sample(
    source: SampleSource, spec: WriteSpec, index: int
) -> tuple[dict, list[tuple[str, bytes]], dict]:
    """(LLaVA record, [(relative path, bytes)], turn counts per level) of sample ``index``."""
    seed = sample_seed(spec.seed, index)
    sid = sample_id(index)
    scene = source.make_scene(index, seed, sid)
    turns = build_conversation(SceneGraph(scene), spec.conversation, random.Random(seed))
    files = [(f"images/{sid}_v{k}.png", encode_png(v.rgb)) for k, v in enumerate(scene.views)]
    facts = [{"level": qa.level, "template": qa.template, **qa.fact} for qa in turns]
    files.append((f"gt/{sid}.npz", encode_npz(gt_arrays(scene, facts))))
    paths = [p for p, _ in files[:-1]]
    record = to_llava(sid, paths, turns)
    if source.multiview:
        record["image"] = paths
    counts: dict[str, int] = {}
    for qa in turns:
        counts[qa.level] = counts.get(qa.level, 0) + 1
    return record, files, {"views": len(scene.views), "levels": counts}


def write_shard(source: SampleSource, spec: WriteSpec, k: int) -> dict[str, Any]:
    """Write shard ``k`` (files first, its completion record last) and return the record."""
    start, end = k * spec.shard_size, min((k + 1) * spec.shard_size, spec.num_samples)
    _remove_temp_files(spec.out, [sample_id(i) for i in range(start, end)], shard_name(k))
    hashes: dict[str, str] = {}
    records, levels, views = [], {}, 0
    for i in range(start, end):
        record, files, counts = make_sample(source, spec, i)
        for rel, data in files:
            _write_unsynced(spec.out / rel, data)
            hashes[rel] = sha256_bytes(data)
        records.append(record)
        views += counts["views"]
        for lv, n in counts["levels"].items():
            levels[lv] = levels.get(lv, 0) + n
    return commit_shard(spec.out, k, (start, end), records, hashes, views, levels)


def _write_unsynced(path: Path, data: bytes) -> None:
    """Temp file + rename without fsync, for a shard's images and sidecars: a kill never leaves a partial
    file under the final name, and after an OS crash the hash check on resume catches lost data (the shard
    JSONL and its completion record are written with fsync, the record last)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _remove_temp_files(out: Path, ids: list[str], shard: str) -> None:
    """Leftovers of an interrupted atomic write (``.<name>.XXXX.tmp``) of this shard's files.

    One listing per folder (a glob per sample listed ``images/`` 64 times per shard: quadratic in the
    dataset size, 64 ms per shard at 1,000 samples)."""
    owners = {"images": set(ids), "gt": set(ids), "shards": {shard}, "state": {shard}}
    for folder, names in owners.items():
        try:
            entries = list(os.scandir(out / folder))
        except FileNotFoundError:
            continue
        for e in entries:  # ".<id>_v<k>.png.<pid>.tmp", ".<id>.npz.<pid>.tmp", ".<shard>.json[l].<x>.tmp"
            if e.name.startswith(".") and e.name.endswith(".tmp"):
                if e.name[1:].split(".", 1)[0].split("_v", 1)[0] in names:
                    Path(e.path).unlink(missing_ok=True)


def verify_shard(out: Path, k: int) -> dict[str, Any] | None:
    """The completion record of shard ``k`` if it exists and every file matches its hash, else None."""
    path = out / "state" / f"{shard_name(k)}.json"
    try:
        state = json.loads(path.read_text())
        files = state["files"]
        if shard_hash(files) != state["hash"]:
            return None
        for rel, h in files.items():
            if sha256_file(confined(out, rel)) != h:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


# ----------------------------------------------------------------------------------------------- whole dataset


def parse_shard_spec(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text}: need 0 <= i < n")
    return i, n


def dataset_config(source: SampleSource, spec: WriteSpec) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "source": source.name,
        "source_config": source.config(),
        "num_samples": spec.num_samples,
        "seed": spec.seed,
        "shard_size": spec.shard_size,
        "conversation": to_dict(spec.conversation),
    }


def _claim_dir(out: Path, config: dict[str, Any]) -> None:
    """Record the config in a fresh dir, or check it equals the one already there (never mix datasets)."""
    path = out / "config.json"
    wanted = json.loads(json.dumps(config, default=_json_default))
    if path.exists():
        try:
            have = json.loads(path.read_text())
        except ValueError:
            raise UserError(
                f"{path} is not valid JSON; remove the directory or choose another --out"
            ) from None
        if have != wanted:
            diff = sorted(k for k in set(have) | set(wanted) if have.get(k) != wanted.get(k))
            raise UserError(
                f"{out} holds a dataset made with a different config (differs in {diff}); "
                "use another --out or the same settings"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty and is not a SpatialBoost dataset; choose another --out")
    atomic_write_json(path, wanted)


# ----------------------------------------------------------------------------------------------- workers
# ``--workers W``: this process and up to W - 1 spawned helpers claim shards one at a time from a shared
# counter. Where the time went with a pool of W spawned workers (bench_datagen.py, 224 px): each worker paid
# ~0.5-1 s before its first shard (interpreter, numpy, EGL context, shader compile and first draw) while
# this process, already warm, sat idle, so 2 workers lost to 1 on a 100-scene job. Now this process writes
# from the first moment and times its shards; it starts helpers once (a) the work left is at least twice a
# helper's start-up (a helper costs a core for that long even if it never gets a shard) and (b) as many
# cores sat idle during its last shard (/proc/stat; on a machine whose cores are all busy, a helper only
# takes time from this process). A long job takes about (work + (W-1) * start-up) / W, a short one or one on
# a busy machine the time of one worker; the log says which it was.

HELPER_STARTUP_S = 1.0  # a spawned helper's start-up, on the safe side (bench_datagen: 0.45-0.65 s quiet)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def choose_workers(requested: int, shards: int) -> int:
    """Processes worth running: at most one per shard to write and one per usable CPU (logged if fewer)."""
    cpus = usable_cpus()
    chosen = max(1, min(requested, shards, cpus))
    if chosen < requested:
        why = f"{shards} shard(s) to write" if shards < min(requested, cpus) else f"{cpus} usable CPU(s)"
        log.info("using %d worker(s), not %d: %s", chosen, requested, why)
    return chosen


def _claim(counter, n: int) -> int | None:
    """The next unclaimed position in the shard list, or None when all are taken (shared by processes)."""
    with counter.get_lock():
        i = counter.value
        if i >= n:
            return None
        counter.value = i + 1
    return i


def _helper(source: SampleSource, spec: WriteSpec, todo: list[int], counter, results, parent: int) -> None:
    """A spawned helper: write claimed shards until none are left or the parent is gone (kill -9)."""
    k = None
    try:
        while os.getppid() == parent and (i := _claim(counter, len(todo))) is not None:
            k = todo[i]
            results.put(("done", k, write_shard(source, spec, k)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which re-raises it
        try:
            payload = pickle.dumps(e)
        except Exception:  # noqa: BLE001 - an unpicklable exception still gets its message across
            payload = pickle.dumps(RuntimeError(f"{type(e).__name__}: {e}"))
        results.put(("error", k, payload))


def _write_parallel(source: SampleSource, spec: WriteSpec, todo: list[int], workers: int, bar) -> None:
    ctx = mp.get_context("spawn")  # never fork: a renderer's GL context does not survive it
    counter, results = ctx.Value("i", 0), ctx.Queue()
    args = (source, spec, todo, counter, results, os.getpid())
    helpers: list = []
    done, fastest, idle = 0, 0.0, math.inf  # fastest: quickest own shard (s); idle: cores idle meanwhile
    try:
        while True:
            if not helpers and (
                n := _helpers_worth_starting(workers, len(todo) - counter.value, fastest, idle)
            ):
                helpers = [ctx.Process(target=_helper, args=args, daemon=True) for _ in range(n)]
                for proc in helpers:
                    proc.start()
                log.info("started %d helper process(es) beside this one (%d asked)", n, workers - 1)
            if (i := _claim(counter, len(todo))) is None:
                break
            t0, cpu0 = time.perf_counter(), _cpu_jiffies()
            write_shard(source, spec, todo[i])
            took = time.perf_counter() - t0
            fastest, idle = min(fastest, took) if fastest else took, _idle_cores(cpu0, _cpu_jiffies())
            done += 1
            bar.update()
            done += _collect(results, helpers, bar, wait=False)
        while done < len(todo):
            done += _collect(results, helpers, bar, wait=True)
    finally:
        for proc in helpers:
            if proc.is_alive():
                proc.terminate()  # still starting up (or idle): it holds no shard
            proc.join()
    if not helpers:
        log.info(
            "--workers %d: this process wrote all %d shard(s) itself: the work left never reached twice a "
            "helper's start-up (~%.1f s) while a core was idle (%.1f idle during the last shard)",
            workers, len(todo), HELPER_STARTUP_S, idle,
        )  # fmt: skip


def _helpers_worth_starting(workers: int, shards_left: int, fastest: float, idle: float) -> int:
    """Helpers that would pay for their start-up: none while the work left (shards x this process's
    quickest shard) is under twice a start-up; at most one per idle core and per shard left beyond ours."""
    if shards_left * fastest < 2 * HELPER_STARTUP_S:  # (with HELPER_STARTUP_S = 0: at once)
        return 0
    cores = workers - 1 if math.isinf(idle) else math.floor(idle + 0.5)
    return max(0, min(workers - 1, shards_left - 1, cores))


def _cpu_jiffies() -> tuple[int, int] | None:
    """(idle, total) CPU time of the whole machine so far (/proc/stat), or None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user .. steal


def _idle_cores(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float:
    """Cores that sat idle between two ``_cpu_jiffies`` readings (inf when unknown)."""
    if before is None or after is None or after[1] <= before[1]:
        return math.inf
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def _collect(results, helpers: list, bar, wait: bool) -> int:
    """How many shards the helpers reported done (``wait``: at least one); re-raises a helper's exception."""
    n = 0
    while True:
        try:
            kind, _, payload = results.get(timeout=0.5) if wait and n == 0 else results.get_nowait()
        except queue.Empty:
            if not (wait and n == 0):
                return n
            _check_helpers(helpers)
            continue
        if kind == "error":
            raise pickle.loads(payload)
        n += 1
        bar.update()


def _check_helpers(helpers: list) -> None:
    dead = [p for p in helpers if p.exitcode not in (None, 0)]
    if dead:
        raise RuntimeError(
            f"worker process {dead[0].pid} exited with code {dead[0].exitcode} (killed?); "
            "re-run the same command to resume (complete shards are kept)"
        )


def write_dataset(
    source: SampleSource,
    spec: WriteSpec,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate (or resume) the shards ``shard[0], shard[0] + shard[1], ...`` of a dataset; returns the manifest.

    ``extra``: source-specific JSON-ready fields recorded in the manifest (e.g. skipped input files)."""
    out = spec.out
    config = dataset_config(source, spec)
    _claim_dir(out, config)
    started = time.time()
    mine = list(range(shard[0], spec.num_shards, shard[1]))
    todo = [k for k in mine if verify_shard(out, k) is None]
    log.info(
        "%d of %d shard(s) to write in %s (%d already complete)",
        len(todo),
        len(mine),
        out,
        len(mine) - len(todo),
    )
    bar = tqdm(total=len(todo), desc="shards", unit="shard", disable=not progress or not todo)
    workers = choose_workers(workers, len(todo)) if workers > 1 else 1
    if workers == 1:
        for k in todo:
            write_shard(source, spec, k)
            bar.update()
    else:
        _write_parallel(source, spec, todo, workers, bar)
    bar.close()
    return write_manifest(out, config, started, extra)


# ----------------------------------------------------------------------------------------------- reading


def load_sample_gt(dataset_dir: str | Path, record: dict[str, Any], load_rgb: bool = True) -> Scene:
    """The ``Scene`` of a record, rebuilt from its sidecar (+ images); the facts are in ``scene.meta["facts"]``."""
    arrays, meta = load_gt_arrays(dataset_dir, record["id"])
    views = []
    for k, (w, h) in enumerate(meta["sizes"]):
        rgb = None
        if load_rgb:
            with Image.open(confined(dataset_dir, record_images(record)[k])) as im:
                rgb = np.asarray(im.convert("RGB"))
        cam = Camera(K=arrays["K"][k], cam_to_world=arrays["cam_to_world"][k], width=w, height=h)
        maps = {key: arrays[key][k] if key in arrays else None for key in ("depth", "instance", "semantic")}
        views.append(View(rgb=rgb, camera=cam, **maps))
    objects = [
        SceneObject(
            **{
                k: np.asarray(v, np.float64) if isinstance(v, list) and k not in _LIST_KEYS else v
                for k, v in o.items()
            }
        )
        for o in map(_with_solid(meta["source"]), meta["objects"])
    ]
    scene_meta = dict(meta["scene_meta"], facts=meta["facts"])
    return Scene(meta["scene_id"], views, objects, meta["semantic_classes"], meta["source"], scene_meta)


_LIST_KEYS = ("visible_pixels",)


def _with_solid(source: str):
    """Sidecars written before objects recorded their solid: a synthetic object's name is its primitive."""

    def fill(o: dict[str, Any]) -> dict[str, Any]:
        return o if "solid" in o else {**o, "solid": o["name"] if source == "synthetic" else "box"}

    return fill
