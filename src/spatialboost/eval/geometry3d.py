"""Pure 3D helpers of the multi-view probes: patch-centre points, feature matching, rigid registration.

Frames and units follow ``spatialboost.datagen.scenes.geometry`` (metres; OpenCV camera, ``cam_to_world`` poses).
A probe image is S x S pixels seen through a (3, 3) ``K`` at that resolution; the encoder's patch grid is
(h, w) with patches of ``S / h`` x ``S / w`` pixels. The **centre pixel** of patch (i, j) is
``(x, y) = (floor((j + 0.5) * S / w), floor((i + 0.5) * S / h))``; its ground-truth 3D point is that pixel
unprojected with its z-depth. A relative pose ``T_ab`` maps camera-a points into camera b's frame:
``T_ab = inv(cam_to_world_b) @ cam_to_world_a``.
"""

from __future__ import annotations

import numpy as np

from spatialboost.datagen.scenes.geometry import unproject_pixel
from spatialboost.image_transform import crop_geometry

# --- the resolution the encoder sees ------------------------------------------------------------------


def probe_intrinsics(K: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
    """(3, 3) K of an (height, width) image after the encoder's resize (shorter side -> size) and centre crop
    to size x size (``spatialboost.image_transform.crop_geometry``), in the continuous pixel coordinates of
    ``datagen.scenes.geometry``."""
    g = crop_geometry(height, width, size)
    sy, sx = g.scale
    out = np.array(K, dtype=np.float64, copy=True)
    out[0, :] *= sx
    out[1, :] *= sy
    out[0, 2] -= g.left
    out[1, 2] -= g.top
    out[2] = (0.0, 0.0, 1.0)
    return out


def patch_centre_pixels(grid: tuple[int, int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer (x, y) of the centre pixel of every patch, row-major over the (h, w) grid: two (h * w,) arrays."""
    h, w = grid
    ys = np.floor((np.arange(h) + 0.5) * size / h).astype(np.int64)
    xs = np.floor((np.arange(w) + 0.5) * size / w).astype(np.int64)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return xx.reshape(-1), yy.reshape(-1)


def patch_points(depth: np.ndarray, K: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame points (h * w, 3) of the patch centre pixels of a (S, S) z-depth map and their validity."""
    xs, ys = patch_centre_pixels(grid, depth.shape[0])
    z = np.asarray(depth, np.float64)[ys, xs]
    return unproject_pixel(xs, ys, z, K), z > 0


# --- matching -------------------------------------------------------------------------------------------


def mutual_nearest_neighbours(fa: np.ndarray, fb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (ia, ib) whose cosine nearest neighbours are each other, and their similarity.

    fa (Na, C), fb (Nb, C). Ties go to the lowest index (argmax), so the result is deterministic.
    """
    if len(fa) == 0 or len(fb) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    a = fa / np.maximum(np.linalg.norm(fa, axis=1, keepdims=True), 1e-12)
    b = fb / np.maximum(np.linalg.norm(fb, axis=1, keepdims=True), 1e-12)
    sim = a @ b.T  # (Na, Nb)
    ab = sim.argmax(1)  # (Na,)
    ba = sim.argmax(0)  # (Nb,)
    ia = np.nonzero(ba[ab] == np.arange(len(a)))[0]
    return ia, ab[ia], sim[ia, ab[ia]]


# --- rigid registration ---------------------------------------------------------------------------------


def kabsch(p: np.ndarray, q: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(4, 4) rigid T minimising sum w ||R p + t - q||^2 for points p, q (N, 3), N >= 3 (no reflection)."""
    w = np.ones(len(p)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    pc, qc = w @ p, w @ q
    H = (p - pc).T @ ((q - qc) * w[:, None])  # (3, 3)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(Vt.T @ U.T)) or 1.0
    R = Vt.T @ np.diag([1.0, 1.0, d]) @ U.T
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, qc - R @ pc
    return T


def _kabsch_batch(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotations (B, 3, 3) and translations (B, 3) of B minimal samples p, q (B, k, 3)."""
    pc, qc = p.mean(1, keepdims=True), q.mean(1, keepdims=True)
    H = (p - pc).transpose(0, 2, 1) @ (q - qc)  # (B, 3, 3)
    U, _, Vt = np.linalg.svd(H)
    V, Ut = Vt.transpose(0, 2, 1), U.transpose(0, 2, 1)
    d = np.sign(np.linalg.det(V @ Ut))
    d[d == 0] = 1.0
    V[:, :, 2] *= d[:, None]  # V diag(1, 1, d): no reflection
    R = V @ Ut
    t = qc[:, 0] - (R @ pc[:, 0, :, None])[:, :, 0]
    return R, t


def ransac_kabsch(
    p: np.ndarray, q: np.ndarray, iterations: int, inlier_threshold: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(4, 4) T with q ~ R p + t from putative matches p, q (N, 3), and the inlier mask (N,).

    ``iterations`` minimal 3-point samples are drawn from ``rng``; the hypothesis with most inliers
    (distance < ``inlier_threshold``, metres) is refitted on its inliers. Fewer than 3 matches: identity.
    """
    n = len(p)
    if n < 3:
        return np.eye(4), np.zeros(n, bool)
    idx = np.argsort(rng.random((iterations, n)), axis=1)[:, :3]  # (B, 3) distinct indices per sample
    R, t = _kabsch_batch(p[idx], q[idx])
    resid = np.linalg.norm(p @ R.transpose(0, 2, 1) + t[:, None] - q[None], axis=2)  # (B, N)
    counts = (resid < inlier_threshold).sum(1)
    best = int(np.argmax(counts))
    inliers = resid[best] < inlier_threshold
    if inliers.sum() >= 3:
        return kabsch(p[inliers], q[inliers]), inliers
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R[best], t[best]
    return T, inliers


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle (degrees) of a rotation matrix."""
    c = (np.trace(np.asarray(R)[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def relative_pose(cam_to_world_a: np.ndarray, cam_to_world_b: np.ndarray) -> np.ndarray:
    """T_ab: camera-a points -> camera-b frame."""
    return np.linalg.inv(cam_to_world_b) @ cam_to_world_a


def alignment_rmse(T_est: np.ndarray, T_gt: np.ndarray, points: np.ndarray) -> float:
    """RMSE (metres) between ``points`` (N, 3) moved by the estimate and by the ground truth."""
    if len(points) == 0:
        return float("nan")
    a = points @ T_est[:3, :3].T + T_est[:3, 3]
    b = points @ T_gt[:3, :3].T + T_gt[:3, 3]
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=1))))


# --- point clouds ----------------------------------------------------------------------------------------


def voxel_keep(points: np.ndarray, voxel: float) -> np.ndarray:
    """Indices (sorted) of the first point in each occupied voxel of side ``voxel`` metres."""
    if len(points) == 0:
        return np.zeros(0, np.int64)
    keys = np.floor(points / voxel).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return np.sort(first)
