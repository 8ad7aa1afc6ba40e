"""The datagen dataset writer (datagen/dataset/writer.py) and its reader side: determinism across shards and
workers, resume after damage, refusal, validation."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from spatialboost.datagen.dataset import writer as dataset
from spatialboost.datagen.dataset.validate import validate_dataset
from spatialboost.datagen.dataset.writer import WriteSpec, encode_npz, load_sample_gt, write_dataset
from spatialboost.datagen.sources import GenerateConfig, SyntheticSource
from spatialboost.dataset_format import iter_records, read_manifest
from spatialboost.errors import UserError

N, SHARD = 8, 2  # 4 shards


def _cfg(seed: int = 3) -> GenerateConfig:
    cfg = GenerateConfig(scenes=N, seed=seed, multiview_share=0.5, max_views=3, shard_size=SHARD)
    cfg.synthetic.image_size = 48
    return cfg


def _write(out: Path, shard=(0, 1), workers=1, seed=3) -> dict:
    cfg = _cfg(seed)
    spec = WriteSpec(out, cfg.scenes, cfg.seed, cfg.shard_size, cfg.conversation)
    return write_dataset(SyntheticSource(cfg), spec, shard, workers, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ds"
    _write(out)
    return out


def test_layout_manifest_and_reader(reference):
    m = read_manifest(reference)
    assert m["complete"] and m["counts"]["samples"] == N and len(m["shards"]) == N // SHARD
    assert m["seed"] == 3 and m["config"]["conversation"]["order"] == "forward" and "numpy" in m["software"]
    records = list(iter_records(reference))
    assert [r["id"] for r in records] == [f"{i:08d}" for i in range(N)]
    assert any(len(r["image"]) > 1 for r in records) and all(isinstance(r["image"], list) for r in records)
    for r in records:
        scene = load_sample_gt(reference, r)
        assert (
            len(scene.views) == len(r["image"]) and len(scene.meta["facts"]) == len(r["conversations"]) // 2
        )
        v = scene.views[0]
        assert v.rgb.shape == (48, 48, 3) and v.depth.dtype == np.float32 and v.instance.dtype == np.int32
        assert v.semantic.dtype == np.uint8 and scene.objects and scene.objects[0].aabb_min.shape == (3,)
        ids = set(np.unique(v.instance)) - {0}
        assert ids <= {o.id for o in scene.objects}
    assert validate_dataset(reference) == (
        [],
        {"samples": N, "turns": sum(len(r["conversations"]) // 2 for r in records)},
    )


def test_npz_is_byte_deterministic():
    arrays = {"a": np.arange(5, dtype=np.float32), "meta": np.frombuffer(b"{}", np.uint8)}
    first = encode_npz(arrays)
    time.sleep(1.1)  # zip timestamps have 2 s resolution: a clock in the file would show up
    assert encode_npz(arrays) == first


def test_shard_union_equals_unsharded(reference, tmp_path):
    union: dict[str, bytes] = {}
    for i in range(3):
        out = tmp_path / f"part{i}"
        _write(out, shard=(i, 3))
        union.update(_files(out))
    assert union == _files(reference)


@dataclass
class HelperFirstSource(SyntheticSource):
    """The calling process starts (shard 0) only once a spawned helper has finished shard 1, so the helper
    provably writes shards; ``delay`` seconds per scene in every process. Same data as SyntheticSource."""

    out: str = ""
    parent: int = 0
    delay: float = 0.0

    def make_scene(self, index: int, seed: int, sample_id: str):
        if index == 0 and os.getpid() == self.parent:
            deadline = time.time() + 60
            while not (Path(self.out) / "state/shard-00001.json").exists():
                assert time.time() < deadline, "no helper wrote shard 1"
                time.sleep(0.01)
        time.sleep(self.delay)
        return super().make_scene(index, seed, sample_id)


def _write_helper_first(out: Path, delay: float = 0.0) -> dict:
    dataset.HELPER_STARTUP_S = 0.0  # start helpers before the first shard (the parent waits for one)
    cfg = _cfg()
    spec = WriteSpec(out, cfg.scenes, cfg.seed, cfg.shard_size, cfg.conversation)
    source = HelperFirstSource(cfg, out=str(out), parent=os.getpid(), delay=delay)
    return write_dataset(source, spec, workers=2, progress=False)


def test_workers_equal_one_worker(reference, tmp_path, monkeypatch):
    monkeypatch.setattr(dataset, "usable_cpus", lambda: 2)  # two processes even on a 1-CPU runner
    monkeypatch.setattr(dataset, "HELPER_STARTUP_S", 0.0)
    _write_helper_first(tmp_path / "w2")
    assert _files(tmp_path / "w2") == _files(reference)


@dataclass
class FailsInHelperSource(SyntheticSource):
    """Slow in the calling process (so a helper claims a shard), failing in any other process."""

    parent: int = 0

    crash: bool = False  # the helper dies with SIGKILL instead (as under the OOM killer)
    delay: float = 0.3  # seconds per scene in the calling process

    def make_scene(self, index: int, seed: int, sample_id: str):
        if os.getpid() != self.parent:
            if self.crash:
                os.kill(os.getpid(), signal.SIGKILL)
            raise UserError(f"bad input {index}")
        time.sleep(self.delay)
        return super().make_scene(index, seed, sample_id)


def test_a_helpers_error_reaches_the_caller(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset, "usable_cpus", lambda: 2)
    monkeypatch.setattr(dataset, "HELPER_STARTUP_S", 0.0)
    cfg = _cfg()
    spec = WriteSpec(tmp_path / "ds", cfg.scenes, cfg.seed, cfg.shard_size, cfg.conversation)
    with pytest.raises(UserError, match=r"bad input \d"):
        write_dataset(FailsInHelperSource(cfg, parent=os.getpid()), spec, workers=2, progress=False)
    assert not (tmp_path / "ds/manifest.json").exists()


def test_a_killed_helper_stops_the_run_which_then_resumes(reference, tmp_path, monkeypatch):
    """No hang waiting for the shard a dead helper held: a one-line error, then the same command resumes.
    The helper starts after the first shard (its 0.8 s x 3 shards left >= 2 x 0.05 s start-up)."""
    monkeypatch.setattr(dataset, "usable_cpus", lambda: 2)
    monkeypatch.setattr(dataset, "HELPER_STARTUP_S", 0.05)
    monkeypatch.setattr(dataset, "_idle_cores", lambda before, after: 1.0)  # whatever the machine's load
    cfg = _cfg()
    out = tmp_path / "ds"
    spec = WriteSpec(out, cfg.scenes, cfg.seed, cfg.shard_size, cfg.conversation)
    source = FailsInHelperSource(cfg, parent=os.getpid(), crash=True, delay=0.4)
    with pytest.raises(RuntimeError, match="exited with code -9 .*re-run the same command"):
        write_dataset(source, spec, workers=2, progress=False)
    _write(out)
    assert _files(out) == _files(reference)


def test_no_helper_for_a_job_shorter_than_its_start_up(reference, tmp_path, monkeypatch, caplog):
    """4 shards of 48 px scenes are done before a helper could start: none is spawned, and the log says so."""
    monkeypatch.setattr(dataset, "usable_cpus", lambda: 2)
    real = dataset.mp.get_context

    class NoHelpers:
        def __init__(self, method):
            self.ctx = real(method)

        def __getattr__(self, name):
            return getattr(self.ctx, name)

        def Process(self, *args, **kwargs):  # noqa: N802 - multiprocessing's name
            raise AssertionError("a helper was started for a job shorter than its start-up")

    monkeypatch.setattr(dataset.mp, "get_context", NoHelpers)
    with caplog.at_level(logging.INFO, logger="spatialboost.datagen.dataset.writer"):
        _write(tmp_path / "ds", workers=2)
    assert "--workers 2: this process wrote all 4 shard(s) itself" in caplog.text
    assert _files(tmp_path / "ds") == _files(reference)


def test_no_helper_when_no_core_is_idle(reference, tmp_path, monkeypatch, caplog):
    """Plenty of work left, but the other cores were busy during this process's shard: a helper would
    only take time from it."""
    monkeypatch.setattr(dataset, "usable_cpus", lambda: 2)
    monkeypatch.setattr(dataset, "HELPER_STARTUP_S", 1e-6)
    monkeypatch.setattr(dataset, "_idle_cores", lambda before, after: 0.3)
    with caplog.at_level(logging.INFO, logger="spatialboost.datagen.dataset.writer"):
        _write(tmp_path / "ds", workers=2)
    assert "wrote all 4 shard(s) itself" in caplog.text and "0.3 idle during the last shard" in caplog.text
    assert _files(tmp_path / "ds") == _files(reference)


def test_helpers_per_idle_core_and_shard_left(monkeypatch):
    monkeypatch.setattr(dataset, "HELPER_STARTUP_S", 1.0)
    worth = dataset._helpers_worth_starting
    assert worth(4, shards_left=10, fastest=0.1, idle=8.0) == 0  # 1 s of work left < 2 start-ups
    assert worth(4, shards_left=30, fastest=0.1, idle=8.0) == 3
    assert worth(4, shards_left=30, fastest=0.1, idle=1.4) == 1
    assert worth(4, shards_left=30, fastest=0.1, idle=0.4) == 0
    assert worth(4, shards_left=2, fastest=5.0, idle=8.0) == 1
    jiffies = dataset._cpu_jiffies()
    if jiffies is not None:  # Linux: a real reading
        assert 0 <= jiffies[0] <= jiffies[1]
    assert dataset._idle_cores((100, 1000), (150, 1100)) == pytest.approx(0.5 * (os.cpu_count() or 1))


def test_fewer_workers_when_they_cannot_help(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(dataset, "usable_cpus", lambda: 3)
    with caplog.at_level(logging.INFO, logger="spatialboost.datagen.dataset.writer"):
        assert dataset.choose_workers(8, shards=20) == 3
        assert dataset.choose_workers(8, shards=2) == 2
        assert dataset.choose_workers(2, shards=5) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "using 3 worker(s), not 8: 3 usable CPU(s)",
        "using 2 worker(s), not 8: 2 shard(s) to write",
    ]
    caplog.clear()
    cfg = _cfg()
    cfg.scenes = 1  # one shard: no helper is started
    spec = WriteSpec(tmp_path / "one", cfg.scenes, cfg.seed, cfg.shard_size, cfg.conversation)
    with caplog.at_level(logging.INFO, logger="spatialboost.datagen.dataset.writer"):
        write_dataset(SyntheticSource(cfg), spec, workers=2, progress=False)
    assert "using 1 worker(s), not 2: 1 shard(s) to write" in caplog.text


def test_kill_9_of_the_parent_stops_helpers_and_resumes(reference, tmp_path):
    """kill -9 of a 2-worker run: the helper stops after its current shard (no orphan keeps writing), and
    the same command then gives the bytes of an uninterrupted run."""
    out = tmp_path / "killed"
    here = str(Path(__file__).parent)
    code = (
        f"import sys; sys.path.insert(0, {here!r})\nfrom pathlib import Path\n"
        f"from test_datagen_writer import _write_helper_first\n_write_helper_first(Path({str(out)!r}), delay=0.2)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "state/shard-00001.json").exists():
        time.sleep(0.01)  # the helper finished shard 1 and is on shard 2 (0.4 s); the parent waits
    helpers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(helpers) == 1, helpers
    deadline = time.time() + 30
    while time.time() < deadline and Path(f"/proc/{helpers[0]}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{helpers[0]}").exists(), "the helper outlived its parent"
    assert not (out / "state/shard-00003.json").exists(), "an orphaned helper kept claiming shards"
    assert not (out / "manifest.json").exists()
    _write(out)
    assert _files(out) == _files(reference)


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and "resource_tracker" not in (stat.parent / "cmdline").read_text():
            kids.append(int(stat.parent.name))
    return kids


def test_resume_regenerates_damaged_shards_only(reference, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    (out / "shards/shard-00001.jsonl").unlink()  # missing JSONL
    gt = out / "gt/00000004.npz"  # shard 2: truncated sidecar
    gt.write_bytes(gt.read_bytes()[:100])
    state = out / "state/shard-00000.json"  # shard 0: corrupt recorded hash
    st = json.loads(state.read_text())
    st["hash"] = "0" * 64
    state.write_text(json.dumps(st))
    keep = out / "shards/shard-00003.jsonl"
    before = keep.stat().st_mtime_ns
    os.utime(keep, ns=(before - 10**9, before - 10**9))
    m = _write(out)
    assert m["complete"]
    assert keep.stat().st_mtime_ns == before - 10**9  # finished shard not redone
    assert _files(out) == _files(reference)


def test_different_config_is_refused(reference, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    with pytest.raises(UserError, match="different config"):
        _write(out, seed=4)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a SpatialBoost dataset"):
        _write(other)


def test_validate_catches_tampered_answer(reference, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    path = out / "shards/shard-00000.jsonl"
    lines = path.read_text().splitlines()
    rec = json.loads(lines[0])
    turn = next(t for t in rec["conversations"][1::2] if re.search(r"\d\.\d\d m\b", t["value"]))
    turn["value"] = re.sub(
        r"(\d+)\.(\d\d) m", lambda mt: f"{int(mt.group(1)) + 1}.{mt.group(2)} m", turn["value"], count=1
    )
    lines[0] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    errors, _ = validate_dataset(out)
    assert any("hash mismatch" in e for e in errors)
    assert any(e.startswith("00000000 turn") and "does not state" in e for e in errors), errors


def test_load_with_hf_datasets(reference, tmp_path):
    datasets = pytest.importorskip("datasets")
    files = sorted(str(p) for p in (reference / "shards").glob("*.jsonl"))
    ds = datasets.load_dataset("json", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == N and ds[0]["conversations"][0]["from"] == "human"


def test_kill_9_then_resume_is_byte_identical(reference, tmp_path):
    """A real kill -9 in the middle of a run, then the same command: the same bytes as an uninterrupted run."""
    out = tmp_path / "killed"
    here = str(Path(__file__).parent)
    code = f"import sys; sys.path.insert(0, {here!r})\nfrom pathlib import Path\nfrom test_datagen_writer import _write\n_write(Path({str(out)!r}))\n"
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and len(list(out.glob("images/*.png"))) < 3:
        time.sleep(0.01)  # kill once the first shard's files are being written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    if killed:
        assert (
            not (out / "manifest.json").exists()
            or not json.loads((out / "manifest.json").read_text())["complete"]
        )
    _write(out)
    assert _files(out) == _files(reference)
    assert validate_dataset(out)[0] == []


def test_rewriting_a_shard_removes_only_its_own_temp_files(tmp_path):
    out = tmp_path / "ds"
    mine = ["images/.00000002_v0.png.77.tmp", "gt/.00000003.npz.77.tmp", "shards/.shard-00001.jsonl.x1.tmp"]
    other = ["images/.00000004_v1.png.77.tmp", "gt/.00000000.npz.9.tmp", "state/.shard-00002.json.y.tmp"]
    for rel in mine + other + ["images/.hidden-note.txt"]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"x")
    dataset._remove_temp_files(out, [dataset.sample_id(i) for i in (2, 3)], dataset.shard_name(1))
    assert [rel for rel in mine + other if (out / rel).exists()] == other
    assert (out / "images/.hidden-note.txt").exists()
