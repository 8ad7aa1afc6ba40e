"""Output directories: never delete or overwrite what the project did not write; normal file permissions.

``spatialboost.io.OutputDir`` is the one rule every writer of a directory follows (exported encoders,
probe reports, training runs, demo and replicate studies); these tests pin it at each place.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from spatialboost.cli import main
from spatialboost.errors import UserError
from spatialboost.io import OWNER_FILE, OutputDir, atomic_write_text, is_complete
from spatialboost.models import export
from spatialboost.models.dual_channel import boost_encoder
from spatialboost.models.encoders import create_encoder
from spatialboost.models.export import load_encoder, save_encoder

BARE = str(
    Path(__file__).with_name("bare.yaml")
)  # TrainConfig defaults (no --config: the `spatialboost` recipe)


def _boosted():
    enc = boost_encoder(create_encoder("tiny-dinov2", seed=0))
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    return enc


def _same(a, b) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(x).patch, b(x).patch)


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    save_encoder(_boosted(), run / "encoder", include_base=False)
    return run


def _user_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name != OWNER_FILE)


# --------------------------------------------------------------------------------------------- the primitive


def test_output_dir_refuses_foreign_dirs_and_replaces_only_its_own_files(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "mine.txt").write_text("user")
    with pytest.raises(UserError, match="not empty and was not written by spatialboost.*--overwrite"):
        OutputDir.claim(d, "thing")
    out = OutputDir.claim(d, "thing", overwrite=True)
    out.write_text("a.txt", "1")
    out.write_text("sub/b.txt", "2")
    out.finish()
    assert _user_files(d) == ["a.txt", "mine.txt", "sub"]
    out = OutputDir.claim(d, "thing")  # ours now: no --overwrite needed
    out.write_text("a.txt", "3")
    out.finish()  # sub/b.txt was ours and is stale: removed with its empty folder; mine.txt stays
    assert _user_files(d) == ["a.txt", "mine.txt"]
    assert (d / "mine.txt").read_text() == "user"
    with pytest.raises(UserError, match="holds a spatialboost thing, not a other"):
        OutputDir.claim(d, "other")
    (tmp_path / "f.txt").write_text("user")
    with pytest.raises(UserError, match="exists and is not a directory"):
        OutputDir.claim(tmp_path / "f.txt", "thing", overwrite=True)


def test_marker_lists_each_file_before_it_exists_and_is_complete_last(tmp_path):
    out = OutputDir.claim(tmp_path / "d", "thing")
    target = out.path("x.bin")
    marker = json.loads((tmp_path / "d" / OWNER_FILE).read_text())
    assert marker["files"] == ["x.bin"] and marker["complete"] is False and not target.exists()
    assert not is_complete(tmp_path / "d")
    out.write_bytes("x.bin", b"1")
    out.finish()
    assert is_complete(tmp_path / "d")


# --------------------------------------------------------------------------------------------- save / export


def test_save_encoder_never_replaces_a_user_file_or_folder(tmp_path):
    enc = _boosted()
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(UserError, match="notes.txt: exists and is not a directory"):
        save_encoder(enc, notes)
    with pytest.raises(UserError):
        save_encoder(enc, notes, overwrite=True)
    assert notes.read_text() == "my notes"

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not written by spatialboost"):
        save_encoder(enc, folder)
    assert _user_files(folder) == ["keep.txt"]
    save_encoder(enc, folder, overwrite=True)
    assert (folder / "keep.txt").read_text() == "mine"
    _same(enc, load_encoder(folder))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "notes.txt"]  # nothing moved aside


def test_resave_removes_only_stale_files_of_ours(tmp_path):
    save_encoder(_boosted(), tmp_path / "e")
    (tmp_path / "e" / "keep.txt").write_text("a user's file in our folder")
    plain = create_encoder("tiny-dinov2", seed=0)
    save_encoder(plain, tmp_path / "e")  # no adapter this time: adapter.safetensors was ours and is stale
    assert _user_files(tmp_path / "e") == ["base.safetensors", "config.json", "keep.txt"]
    _same(plain, load_encoder(tmp_path / "e"))


def test_an_interrupted_save_is_never_loaded_and_can_be_redone(tmp_path, monkeypatch):
    save_encoder(create_encoder("tiny-dinov2", seed=0), tmp_path / "e")

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "save_tensors", crash)
    with pytest.raises(KeyboardInterrupt):
        save_encoder(_boosted(), tmp_path / "e")
    monkeypatch.undo()
    with pytest.raises(UserError, match="did not finish"):
        load_encoder(tmp_path / "e")
    enc = _boosted()
    save_encoder(enc, tmp_path / "e")
    _same(enc, load_encoder(tmp_path / "e"))


def test_legacy_saves_without_marker_are_still_ours(tmp_path):
    save_encoder(_boosted(), tmp_path / "e")
    (tmp_path / "e" / OWNER_FILE).unlink()  # as an earlier version wrote it
    plain = create_encoder("tiny-dinov2", seed=0)
    save_encoder(plain, tmp_path / "e")
    assert _user_files(tmp_path / "e") == ["base.safetensors", "config.json"]


@pytest.mark.parametrize("fmt", ["spatialboost", "hf"])
def test_export_cli_refuses_foreign_out_and_works_in_place_with_overwrite(tmp_path, monkeypatch, capsys, fmt):
    run = _run(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    assert main(["export", str(run), "--out", ".", "--format", fmt]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err and "Traceback" not in err
    assert _user_files(work) == ["notes.txt"]
    assert main(["export", str(run), "--out", ".", "--format", fmt, "--overwrite"]) == 0
    assert (work / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "work"]  # no stray ..*.old / .tmp
    assert [p.name for p in work.iterdir() if p.name.endswith(".tmp")] == []
    _same(load_encoder(run / "encoder"), load_encoder(work))
    assert main(["export", str(run), "--out", ".", "--format", fmt]) == 0  # ours now: no flag needed
    (tmp_path / "notes.txt").write_text("mine")
    assert (
        main(["export", str(run), "--out", str(tmp_path / "notes.txt"), "--format", fmt, "--overwrite"]) == 2
    )
    assert (tmp_path / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------------- other writers


def test_probe_report_refuses_foreign_out_before_any_work(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.md").write_text("my results")
    assert main(["probe", "--encoder", "tiny-dinov2", "--task", "cls", "--out", str(out)]) == 2
    assert "not written by spatialboost" in capsys.readouterr().err
    assert _user_files(out) == ["results.md"]  # no feature cache written into it either


def test_train_refuses_a_foreign_run_dir(tmp_path, capsys):
    (tmp_path / "photo.jpg").write_bytes(b"x")
    assert main(["train", "--config", BARE, f"run_dir={tmp_path}", f"data.datasets=[{tmp_path}]"]) == 2
    assert "not written by spatialboost; choose another run_dir" in capsys.readouterr().err
    assert _user_files(tmp_path) == ["photo.jpg"]


@pytest.mark.parametrize("command", [["demo", "--quick"], ["replicate", "--quick"]])
def test_demo_and_replicate_refuse_a_foreign_out(tmp_path, capsys, command):
    (tmp_path / "photo.jpg").write_bytes(b"x")
    assert main([*command, "--out", str(tmp_path)]) == 2
    assert "not written by spatialboost" in capsys.readouterr().err
    assert _user_files(tmp_path) == ["photo.jpg"]


# --------------------------------------------------------------------------------------------- permissions


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_outputs_get_the_users_normal_permissions(tmp_path, umask022):
    from spatialboost.train.checkpoint import save_checkpoint

    save_encoder(_boosted(), tmp_path / "enc")
    atomic_write_text(tmp_path / "file.txt", "x")
    save_checkpoint(tmp_path / "ckpt", 1, {"w": torch.zeros(2)}, {}, {"step": 1})
    modes = {**_modes(tmp_path / "enc"), **_modes(tmp_path / "ckpt")}
    modes["file.txt"] = stat.S_IMODE((tmp_path / "file.txt").stat().st_mode)
    dirs = {k for k in modes if (tmp_path / "enc" / k).is_dir() or (tmp_path / "ckpt" / k).is_dir()}
    assert {k: v for k, v in modes.items() if k not in dirs} == dict.fromkeys(set(modes) - dirs, 0o644)
    assert {modes[k] for k in dirs} == {0o755}
    os.umask(0o077)  # the umask is respected, not replaced by a fixed mode
    atomic_write_text(tmp_path / "private.txt", "x")
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600


def test_export_and_probe_outputs_are_readable_by_others(tmp_path, umask022):
    run = _run(tmp_path)
    for fmt in ("spatialboost", "hf"):
        assert main(["export", str(run), "--out", str(tmp_path / fmt), "--format", fmt]) == 0
        modes = _modes(tmp_path / fmt)
        assert set(modes.values()) <= {0o644, 0o755} and modes["."] == 0o755, modes
    from spatialboost.eval.job import probe_before_after
    from spatialboost.eval.runner import ProbeConfig, ProbeDataConfig

    cfg = ProbeConfig(seeds=1, tasks=["cls"], data=ProbeDataConfig(num_train=4, num_test=2))
    probe_before_after("tiny-dinov2", tmp_path / "hf", cfg, out=tmp_path / "probes", plots=False)
    modes = _modes(tmp_path / "probes")
    assert set(modes.values()) <= {0o644, 0o755} and any(k.endswith(".npy") for k in modes), modes


def test_view_never_replaces_a_user_file(tmp_path, capsys):
    data = tmp_path / "ds"
    tiny = ["--scenes", "2", "--image-size", "32", "--shard-size", "2", "--no-progress"]
    assert main(["generate", "synthetic", "--out", str(data), *tiny]) == 0
    page = tmp_path / "notes.html"
    page.write_text("<html>my notes</html>")
    assert main(["view", str(data), "--out", str(page)]) == 2
    assert "not a page `spatialboost view` wrote" in capsys.readouterr().err
    assert page.read_text() == "<html>my notes</html>"
    assert main(["view", str(data), "--out", str(tmp_path / "r.html")]) == 0
    assert main(["view", str(data), "--out", str(tmp_path / "r.html")]) == 0  # its own page: replaced
    assert main(["view", str(data), "--out", str(page), "--overwrite"]) == 0
