"""Re-derive the box-derived numbers of a synthetic dataset from its ground-truth sidecars, independently.

The check the generator's own validator cannot make: it does not reuse ``relations`` (which produced the
answers) but rebuilds each object's solid from the sidecar (its primitive shape, full extents, rotation and
centre) as dense points on its surface, and measures from those points:

- sizes (``object_width`` / ``object_depth`` / ``object_height``): the extent of the surface points along the
  view's horizontal right / forward axis or world up. Wrong when the printed value is more than 0.006 m off.
- gaps (``surface_distance``): the least distance U between the two surfaces' points is an upper bound of
  the true gap g, and ``U - 2 delta`` (delta = the sampling's covering radius) a lower bound. Wrong when the
  printed value lies outside ``[U - 2 delta - 0.006, U + 0.006]``.
- centre distances (the oriented box centre = the midpoint of the solid's extents along its own axes),
  the height spans printed by above/below, and the volumes printed by bigger/smaller (the solid's
  volume, by Monte-Carlo on an inside test).

    python benchmarks/rederive_labels.py DATASET_DIR   # e.g. after: spatialboost generate synthetic
                                                       #   --out DATASET_DIR --scenes 60 --seed 11 --views 1

Prints a table of checked / wrong per quantity and the worst errors; exits 1 if anything is wrong.
Needs scipy (a KD-tree for the gaps).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from spatialboost.dataset_format import iter_records, load_gt_arrays

SPACING = 0.004  # metres between neighbouring surface samples (gaps)
TOL = 0.006  # printed with 2 decimals: 0.005 rounding + 0.001 slack
TORUS_MAJOR, TORUS_MINOR = 0.35, 0.15  # unit torus (before its z is stretched to fill [-0.5, 0.5])


# ----------------------------------------------------------------------------------------------- unit surfaces


def _grid(n_u: int, n_v: int) -> tuple[np.ndarray, np.ndarray]:
    u, v = np.meshgrid(np.linspace(0.0, 1.0, n_u), np.linspace(0.0, 1.0, n_v), indexing="ij")
    return u.ravel(), v.ravel()


def _patches(shape: str) -> list:
    """Surface patches of the unit solid in [-0.5, 0.5]^3: functions (u, v) in [0, 1]^2 -> points (N, 3)."""
    tau = 2 * math.pi

    def face(axis: int, sign: float):
        def f(u, v):
            p = np.empty((len(u), 3))
            p[:, axis] = 0.5 * sign
            p[:, (axis + 1) % 3], p[:, (axis + 2) % 3] = u - 0.5, v - 0.5
            return p

        return f

    def disk(z: float):
        return lambda u, v: np.stack(
            [0.5 * u * np.cos(tau * v), 0.5 * u * np.sin(tau * v), np.full_like(u, z)], -1
        )

    def tri(a, b, c):
        a, b, c = (np.asarray(x, float) for x in (a, b, c))
        return lambda u, v: a + u[:, None] * (b - a) + (u * v)[:, None] * (c - b)

    if shape == "box":
        return [face(ax, s) for ax in range(3) for s in (-1.0, 1.0)]
    if shape == "sphere":
        return [
            lambda u, v: (
                0.5
                * np.stack(
                    [
                        np.sin(math.pi * u) * np.cos(tau * v),
                        np.sin(math.pi * u) * np.sin(tau * v),
                        np.cos(math.pi * u),
                    ],
                    -1,
                )
            )
        ]
    if shape == "cylinder":
        side = lambda u, v: np.stack([0.5 * np.cos(tau * v), 0.5 * np.sin(tau * v), u - 0.5], -1)  # noqa: E731
        return [side, disk(-0.5), disk(0.5)]
    if shape == "cone":  # base disk at z = -0.5, apex (0, 0, 0.5)
        side = lambda u, v: np.stack(  # noqa: E731
            [0.5 * (1 - u) * np.cos(tau * v), 0.5 * (1 - u) * np.sin(tau * v), u - 0.5], -1
        )
        return [side, disk(-0.5)]
    if shape == "pyramid":
        base = [(-0.5, -0.5, -0.5), (0.5, -0.5, -0.5), (0.5, 0.5, -0.5), (-0.5, 0.5, -0.5)]
        apex = (0.0, 0.0, 0.5)
        return [tri(apex, base[i], base[(i + 1) % 4]) for i in range(4)] + [face(2, -1.0)]
    if shape == "torus":

        def torus(u, v):
            ring = TORUS_MAJOR + TORUS_MINOR * np.cos(tau * u)
            return np.stack([ring * np.cos(tau * v), ring * np.sin(tau * v), 0.5 * np.sin(tau * u)], -1)

        return [torus]
    raise ValueError(f"unknown shape {shape!r}")


def surface_points(obj: dict, spacing: float) -> tuple[np.ndarray, float]:
    """World points (N, 3) on the object's surface and their covering radius (metres)."""
    dims = np.asarray(obj["obb_extent"], float)
    R, c = np.asarray(obj["obb_rotation"], float), np.asarray(obj["obb_center"], float)
    to_world = lambda p: c + (p * dims) @ R.T  # noqa: E731
    out, cover = [], 0.0
    for patch in _patches(obj["name"]):
        # lengths of the patch's parameter lines in the world, from a coarse probe
        u, v = _grid(65, 65)
        p = to_world(patch(u, v)).reshape(65, 65, 3)
        len_u = np.linalg.norm(np.diff(p, axis=0), axis=-1).sum(0).max()
        len_v = np.linalg.norm(np.diff(p, axis=1), axis=-1).sum(1).max()
        n_u, n_v = max(2, math.ceil(len_u / spacing) + 1), max(2, math.ceil(len_v / spacing) + 1)
        pts = to_world(patch(*_grid(n_u, n_v)))
        grid = pts.reshape(n_u, n_v, 3)
        step_u = np.linalg.norm(np.diff(grid, axis=0), axis=-1).max(initial=0.0)
        step_v = np.linalg.norm(np.diff(grid, axis=1), axis=-1).max(initial=0.0)
        cover = max(cover, 0.5 * math.hypot(step_u, step_v))
        out.append(pts)
    return np.concatenate(out), cover


def inside(obj: dict, points: np.ndarray) -> np.ndarray:
    """Inside test of the solid for world points (N, 3) (an implicit definition, independent of the surfaces)."""
    dims = np.asarray(obj["obb_extent"], float)
    R, c = np.asarray(obj["obb_rotation"], float), np.asarray(obj["obb_center"], float)
    p = (points - c) @ R / dims  # unit coordinates
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    box = np.all(np.abs(p) <= 0.5, axis=1)
    r = np.hypot(x, y)
    shape = obj["name"]
    if shape == "box":
        return box
    if shape == "sphere":
        return np.linalg.norm(p, axis=1) <= 0.5
    if shape == "cylinder":
        return box & (r <= 0.5)
    if shape == "cone":
        return box & (r <= 0.5 * (0.5 - z))
    if shape == "pyramid":
        half = 0.5 * (0.5 - z)
        return box & (np.abs(x) <= half) & (np.abs(y) <= half)
    if shape == "torus":
        return ((r - TORUS_MAJOR) / TORUS_MINOR) ** 2 + (z / 0.5) ** 2 <= 1.0
    raise ValueError(f"unknown shape {shape!r}")


def solid_volume(obj: dict, rng: np.random.Generator, n: int = 200_000) -> float:
    """Monte-Carlo volume (m^3) of the solid: the box volume times the share of uniform box points inside."""
    dims = np.asarray(obj["obb_extent"], float)
    R, c = np.asarray(obj["obb_rotation"], float), np.asarray(obj["obb_center"], float)
    unit = rng.uniform(-0.5, 0.5, (n, 3))
    return float(np.prod(dims) * inside(obj, c + (unit * dims) @ R.T).mean())


# ----------------------------------------------------------------------------------------------- the checks


def viewer_axes(cam_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal right and forward axes (world) of a camera."""
    forward = cam_to_world[:3, 2].copy()
    forward[2] = 0.0
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    return right, forward


def extent_along(points: np.ndarray, axis: np.ndarray) -> float:
    s = points @ axis
    return float(s.max() - s.min())


def check_sample(record: dict, root: Path, stats: dict, worst: dict, rng: np.random.Generator) -> None:
    from scipy.spatial import cKDTree

    arrays, meta = load_gt_arrays(root, record["id"])
    if meta["source"] != "synthetic":
        raise SystemExit(f"{record['id']}: not a synthetic sample (source {meta['source']!r})")
    objs = {o["id"]: o for o in meta["objects"]}
    answers = [t["value"] for t in record["conversations"][1::2]]
    cache: dict[tuple[str, int], object] = {}

    def surf(i: int) -> tuple[np.ndarray, float]:
        if ("s", i) not in cache:
            cache[("s", i)] = surface_points(objs[i], SPACING)
        return cache[("s", i)]

    def note(kind: str, printed: float, truth: float, ok: bool, where: str) -> None:
        stats[kind]["checked"] += 1
        err = printed - truth
        if not ok:
            stats[kind]["wrong"] += 1
        if abs(err) > abs(worst.get(kind, (0.0,))[0]):
            worst[kind] = (err, truth, where)

    for t, (fact, answer) in enumerate(zip(meta["facts"], answers, strict=True)):
        fn, args, where = fact["fn"], fact["args"], f"{record['id']} turn {t + 1}"
        if fn == "taller_shorter":  # the heights it prints are cited object_height facts
            for sub in fact["support"]:
                o = objs[sub["args"]["a"]]
                truth = extent_along(surf(o["id"])[0], np.array([0.0, 0.0, 1.0]))
                printed = float(
                    re.search(re.escape(o["description"]) + r" is (\d+\.\d\d) m tall", answer, re.I).group(1)
                )
                note(f"size ({o['name']})", printed, truth, abs(printed - truth) <= TOL, where)
        elif fn in ("object_width", "object_depth", "object_height"):
            o = objs[args["a"]]
            if fn == "object_height":
                axis = np.array([0.0, 0.0, 1.0])
            else:
                right, forward = viewer_axes(arrays["cam_to_world"][args["view"]])
                axis = right if fn == "object_width" else forward
            truth = extent_along(surf(args["a"])[0], axis)
            printed = float(re.search(r"is (\d+\.\d\d) m (?:wide|deep|tall)", answer).group(1))
            note(f"size ({o['name']})", printed, truth, abs(printed - truth) <= TOL, where)
        elif fn == "surface_distance":
            (pa, ca), (pb, cb) = surf(args["a"]), surf(args["b"])
            upper = float(cKDTree(pa).query(pb, k=1)[0].min())
            lower = max(0.0, upper - 2 * max(ca, cb))
            m = re.search(r"(\d+\.\d\d) m", answer)
            printed = float(m.group(1))
            ok = lower - TOL <= printed <= upper + TOL
            note("gap", printed, upper, ok, where)
            if printed <= 0.0 and lower > 0.01:
                print(f"{where}: printed as touching, >= {lower:.3f} m apart")
                stats["gap"]["touching but apart"] += 1
        elif fn == "center_distance":
            centre = {}
            for i in (args["a"], args["b"]):
                o, p = objs[i], surf(i)[0]
                R = np.asarray(o["obb_rotation"], float)
                s = p @ R  # coordinates along the object's own axes
                centre[i] = R @ (0.5 * (s.min(0) + s.max(0)))
            truth = float(np.linalg.norm(centre[args["a"]] - centre[args["b"]]))
            printed = float(re.search(r"are (\d+\.\d\d) m apart", answer).group(1))
            note("centre distance", printed, truth, abs(printed - truth) <= TOL, where)
        elif fn == "above_below":
            spans = [float(x) for x in re.findall(r"(\d+\.\d\d)-(\d+\.\d\d) m", answer)[0]]
            spans += [float(x) for x in re.findall(r"(\d+\.\d\d)-(\d+\.\d\d) m", answer)[1]]
            for k, i in enumerate((args["a"], args["b"])):
                z = surf(i)[0][:, 2]
                for printed, truth in zip(spans[2 * k : 2 * k + 2], (z.min(), z.max()), strict=True):
                    note("above/below heights", printed, float(truth), abs(printed - truth) <= TOL, where)
        elif fn == "bigger_smaller":
            printed_vols = [float(x) for x in re.findall(r"(\d+\.\d+) m\^3", answer)]
            for printed, i in zip(printed_vols, (args["a"], args["b"]), strict=True):
                truth = solid_volume(objs[i], rng)
                ok = abs(printed - truth) <= 0.0006 + 0.02 * truth
                note("volume (solid)", printed, truth, ok, where)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    args = ap.parse_args(argv)
    stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    worst: dict[str, tuple[float, float, str]] = {}
    rng = np.random.default_rng(0)
    n = 0
    for record in iter_records(args.dataset):
        check_sample(record, args.dataset, stats, worst, rng)
        n += 1
    print(f"{args.dataset}: {n} samples")
    print(f"{'quantity':<24} {'checked':>8} {'wrong':>6}   worst (printed - truth, truth, where)")
    total_wrong = 0
    for kind in sorted(stats):
        s = stats[kind]
        total_wrong += s["wrong"]
        err, truth, where = worst.get(kind, (0.0, 0.0, "-"))
        rel = f" ({100 * err / truth:+.0f}%)" if truth > 0 else ""
        extra = (
            f"; {s['touching but apart']} said touching, >= 0.01 m apart" if s["touching but apart"] else ""
        )
        unit = "m^3" if kind.startswith("volume") else "m"
        print(
            f"{kind:<24} {s['checked']:>8} {s['wrong']:>6}   {err:+.3f} {unit}{rel}, {truth:.3f}, {where}{extra}"
        )
    sizes = [s for k, s in stats.items() if k.startswith("size")]
    print(
        f"sizes: {sum(s['wrong'] for s in sizes)} of {sum(s['checked'] for s in sizes)} wrong; "
        f"all quantities: {total_wrong} wrong"
    )
    return 1 if total_wrong else 0


if __name__ == "__main__":
    sys.exit(main())
