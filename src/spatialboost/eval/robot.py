"""The robot-learning probe (paper Table 4): CortexBench-style behaviour cloning on Meta-World.

Protocol (CortexBench, Majumdar et al. 2023, at our scale):

- **Demonstrations**: Meta-World's scripted experts (``metaworld.policies``) on the task with a fresh random
  goal / object position per episode (env seed ``DEMO_SEED + i``); an episode that fails within the horizon
  is dropped and the next seed tried (``require_success``). Frames are rendered with MuJoCo's offscreen
  renderer at S x S from ``camera`` (the image is flipped upright; shadows, reflections and multisampling
  off: 64 px frames, 6-8x faster on a software GL). ``reach-v3``'s goal marker is drawn as a 4 cm green
  sphere (it is a 2 cm red dot, hidden by the red arm at 64 px).
- **What the policy sees**: the frozen encoder's CLS token of the frame (``features.layers``), plus, with
  ``proprio``, the hand position and gripper opening (the first 4 state numbers). The goal and object
  positions are withheld: they are only in the image, so vision matters. The ``blind`` baseline is the same
  policy without the image (proprioception only); it shows how much the image is worth on each task.
- **Policy**: an MLP (standardised input, ``hidden`` x ``layers`` ReLU, 4 actions), MSE to the expert's
  (clipped) actions, Adam, ``epochs`` over the demos, batch order from a seeded generator.
- **Evaluation**: ``evals`` times during training (evenly spaced, the last at the end) the policy runs
  ``rollouts`` episodes (env seeds ``EVAL_SEED + j``: the same episodes for every encoder and seed) of at
  most ``horizon`` steps; success = Meta-World's success flag at any step. ``success`` is the best of the
  evaluations (CortexBench's "best checkpoint"), ``success_final`` the last; both averaged over tasks in
  the ``robot`` row. Mean +- std are over BC seeds; one evaluation's success rate also carries a binomial
  standard error of sqrt(p (1 - p) / rollouts).

Rendered demos and their features are cached (``cache_dir/robot/``), keyed by their content: the task,
sizes, seeds, camera, renderer settings and the metaworld/mujoco versions (demos) plus the encoder's weights
hash and layers (features); written to a temporary file and renamed. Rollouts are the expensive part: they
render every step and cannot be cached; their count is ``rollouts`` and their time is reported.

Meta-World is optional (``pip install 'spatialboost[robot]'``); without it the probe raises a UserError
saying so. Headless rendering uses EGL (``MUJOCO_GL=egl``, set here unless already set).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spatialboost.config import ConfigError
from spatialboost.errors import UserError
from spatialboost.eval.features import encode_batch, layer_indices
from spatialboost.eval.heads import Standardize, feature_stats
from spatialboost.eval.probes import ProbeResult
from spatialboost.io import atomic_open
from spatialboost.models.encoder_base import VisionEncoder, weights_sha256
from spatialboost.rng import seeded

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the robot probe needs Meta-World: pip install 'spatialboost[robot]' (metaworld, mujoco, gymnasium); "
    "it renders headless through EGL (MUJOCO_GL=egl)"
)
DEMO_SEED = 100_000
EVAL_SEED = 200_000
CACHE_VERSION = 1
HORIZONS = {"reach-v3": 100, "button-press-topdown-v3": 120, "drawer-open-v3": 150}  # ~1.7x the expert's
GOAL_MARKER = {"reach-v3": (0.04, (0.1, 0.9, 0.1, 1.0))}  # task -> (radius m, rgba) of the "goal" site
PROPRIO = slice(0, 4)  # hand xyz + gripper opening


@dataclass
class RobotConfig:
    tasks: list[str] = field(default_factory=lambda: ["reach-v3", "button-press-topdown-v3"])
    demos: int = 25  # expert episodes per task (CortexBench's Meta-World: 25)
    horizon: int = 0  # steps per episode; 0 = HORIZONS[task] (else 150)
    camera: str = "corner"
    image_size: int = 0  # 0 = the probe resolution (the first encoder's)
    proprio: bool = True
    hidden: int = 256
    layers: int = 2
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    evals: int = 3  # evaluations during training (evenly spaced; the last after the final epoch)
    rollouts: int = 10  # episodes per evaluation
    require_success: bool = True  # keep only successful expert episodes
    blind: bool = True  # also run the proprioception-only policy (same seeds) as a reference

    def validate(self) -> None:
        if self.demos < 1 or self.evals < 1 or self.rollouts < 1 or self.epochs < self.evals:
            raise ConfigError("robot.demos/evals/rollouts must be >= 1 and robot.epochs >= robot.evals")
        if self.horizon < 0 or self.hidden < 1 or self.layers < 0 or self.lr <= 0 or self.batch_size < 1:
            raise ConfigError("robot.horizon must be >= 0; hidden, batch_size >= 1; layers >= 0; lr > 0")
        if not self.tasks:
            raise ConfigError("robot.tasks must name at least one Meta-World task")

    def horizon_of(self, task: str) -> int:
        return self.horizon or HORIZONS.get(task, 150)


# --- the environment ---------------------------------------------------------------------------------------


def import_metaworld():
    """``(env classes by name, expert policy classes by name, mujoco)``, or a UserError saying what to install."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        # lazy: optional extra [robot] (Meta-World), needed only by the robot probe
        import mujoco
        from metaworld import env_dict, policies
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return env_dict.ALL_V3_ENVIRONMENTS, policies.ENV_POLICY_MAP, mujoco


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("metaworld", "mujoco"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "?"
    return out


class MetaWorldTask:
    """One Meta-World task with a random goal per seeded reset, its scripted expert and a fast renderer."""

    def __init__(self, task: str, camera: str, size: int) -> None:
        envs, experts, mujoco = import_metaworld()
        if task not in envs or task not in experts:
            known = ", ".join(sorted(set(envs) & set(experts)))
            raise UserError(f"unknown Meta-World task {task!r}; known: {known}")
        self.task, self.size, self.camera = task, size, camera
        env = envs[task]()
        env._partially_observable = False  # the expert reads the goal; the policy never sees it
        env.__dict__.pop("sawyer_observation_space", None)  # recomputed for full observability
        env._freeze_rand_vec, env.seeded_rand_vec, env._set_task_called = False, True, True
        self.env, self.expert = env, experts[task]()
        model = env.model
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)  # the offscreen buffer fits S x S
        model.vis.global_.offheight = max(model.vis.global_.offheight, size)
        if task in GOAL_MARKER:
            radius, rgba = GOAL_MARKER[task]
            model.site("goal").size[0] = radius
            model.site("goal").rgba[:] = rgba
        try:
            self.renderer = mujoco.Renderer(model, size, size)
        except Exception as e:  # noqa: BLE001 -- GL back-ends raise assorted types
            raise UserError(
                f"Meta-World cannot render ({e}); headless machines need EGL: MUJOCO_GL=egl"
            ) from None
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
            self.renderer.scene.flags[flag] = 0
        if camera not in [model.camera(i).name for i in range(model.ncam)]:
            names = ", ".join(model.camera(i).name for i in range(model.ncam))
            raise UserError(f"Meta-World has no camera {camera!r}; known: {names}")

    def reset(self, seed: int) -> np.ndarray:
        self.env.seed(seed)
        obs, _ = self.env.reset()
        return obs

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool]:
        obs, _, _, _, info = self.env.step(np.clip(action, -1.0, 1.0).astype(np.float32))
        return obs, bool(info["success"])

    def render(self) -> np.ndarray:
        """(S, S, 3) uint8, upright."""
        self.renderer.update_scene(self.env.data, camera=self.camera)
        return self.renderer.render()[::-1].copy()

    def close(self) -> None:
        self.renderer.close()
        self.env.close()


# --- demonstrations ---------------------------------------------------------------------------------------


@dataclass
class Demos:
    frames: np.ndarray  # (N, S, S, 3) uint8
    proprio: np.ndarray  # (N, 4) float32
    actions: np.ndarray  # (N, 4) float32, clipped to [-1, 1]
    episode: np.ndarray  # (N,) int64
    seeds: np.ndarray  # (E,) env seeds of the kept episodes
    key: str = ""
    seconds: float = 0.0  # wall time of the collection (0 when read from the cache)


def demo_key(task: str, cfg: RobotConfig, size: int) -> str:
    blob = {"v": CACHE_VERSION, "task": task, "demos": cfg.demos, "horizon": cfg.horizon_of(task),
            "camera": cfg.camera, "size": size, "seed": DEMO_SEED, "success": cfg.require_success,
            "marker": GOAL_MARKER.get(task), "render": "noshadow-noreflect-nomsaa-flipud", **versions()}  # fmt: skip
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def collect_demos(env: MetaWorldTask, cfg: RobotConfig) -> Demos:
    horizon, t0 = cfg.horizon_of(env.task), time.perf_counter()
    frames, proprio, actions, episode, seeds = [], [], [], [], []
    for seed in range(DEMO_SEED, DEMO_SEED + 10 * cfg.demos):
        f, p, a, success = _expert_episode(env, seed, horizon)
        if success or not cfg.require_success:
            frames, proprio, actions = frames + f, proprio + p, actions + a
            episode += [len(seeds)] * len(f)
            seeds.append(seed)
        if len(seeds) == cfg.demos:
            return Demos(np.stack(frames), np.array(proprio, np.float32), np.array(actions, np.float32),
                         np.array(episode, np.int64), np.array(seeds, np.int64), seconds=time.perf_counter() - t0)  # fmt: skip
    raise UserError(f"{env.task}: the scripted expert succeeded in only {len(seeds)} of {10 * cfg.demos} episodes "
                    f"within {horizon} steps; raise robot.horizon")  # fmt: skip


def _expert_episode(env: MetaWorldTask, seed: int, horizon: int):
    """Frames, proprioception and (clipped) actions of one expert episode, and whether it succeeded."""
    obs = env.reset(seed)
    frames, proprio, actions = [], [], []
    for _ in range(horizon):
        with warnings.catch_warnings():  # the experts warn that their gains exceed the action range
            warnings.simplefilter("ignore", UserWarning)
            action = np.clip(env.expert.get_action(obs), -1.0, 1.0)
        frames.append(env.render())
        proprio.append(obs[PROPRIO])
        actions.append(action)
        obs, success = env.step(action)
        if success:
            return frames, proprio, actions, True
    return frames, proprio, actions, False


def load_or_collect_demos(task: str, cfg: RobotConfig, size: int, cache_dir: Path) -> Demos:
    key = demo_key(task, cfg, size)
    path = Path(cache_dir) / "robot" / f"demos-{task}-{key}.npz"
    if path.is_file():
        log.info("robot demos cache hit: %s", path)
        with np.load(path, allow_pickle=False) as z:
            return Demos(**{k: z[k] for k in ("frames", "proprio", "actions", "episode", "seeds")}, key=key)
    env = MetaWorldTask(task, cfg.camera, size)
    try:
        demos = collect_demos(env, cfg)
    finally:
        env.close()
    demos.key = key
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        np.savez(f, frames=demos.frames, proprio=demos.proprio, actions=demos.actions, episode=demos.episode,
                 seeds=demos.seeds)  # fmt: skip
    log.info("robot demos: %s, %d episodes, %d frames in %.1f s -> %s", task, len(demos.seeds), len(demos.frames),
             demos.seconds, path)  # fmt: skip
    return demos


# --- features -------------------------------------------------------------------------------------------


def frame_features(
    encoder: VisionEncoder, frames: np.ndarray, layers: str, batch_size: int = 64
) -> np.ndarray:
    """(N, L*D) float32 CLS features of (N, S, S, 3) frames (resized when S is not a multiple of the patch)."""
    idx = layer_indices(layers, encoder.spec.num_layers)
    side = frames.shape[1] - frames.shape[1] % encoder.spec.patch_size
    out = []
    for start in range(0, len(frames), batch_size):
        batch = frames[start : start + batch_size]
        if side != batch.shape[1]:
            batch = batch[:, :side, :side]  # crop the few extra pixels
        out.append(encode_batch(encoder, batch, idx)[0])
    return np.concatenate(out).astype(np.float32)


def cached_features(encoder: VisionEncoder, demos: Demos, layers: str, cache_dir: Path,
                    weights: str | None = None) -> np.ndarray:  # fmt: skip
    blob = json.dumps({"v": CACHE_VERSION, "demos": demos.key, "weights": weights or weights_sha256(encoder),
                       "name": encoder.spec.name, "layers": layers}, sort_keys=True)  # fmt: skip
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    path = Path(cache_dir) / "robot" / f"features-{key}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    feats = frame_features(encoder, demos.frames, layers)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        np.save(f, feats)
    return feats


# --- behaviour cloning ----------------------------------------------------------------------------------


class Policy(nn.Module):
    """Standardised input -> ``layers`` x (Linear, ReLU) of width ``hidden`` -> 4 actions."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, hidden: int, layers: int) -> None:
        super().__init__()
        self.norm = Standardize(mean, std)
        dims = [mean.numel(), *([hidden] * layers)]
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            blocks += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*blocks, nn.Linear(dims[-1], 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


def policy_inputs(feats: np.ndarray | None, proprio: np.ndarray, use_proprio: bool) -> np.ndarray:
    parts = [p for p in (feats, proprio if use_proprio or feats is None else None) if p is not None]
    return np.concatenate(parts, axis=1).astype(np.float32)


def eval_epochs(cfg: RobotConfig) -> list[int]:
    """1-based epochs after which the policy is evaluated: ``evals`` evenly spaced, the last = ``epochs``."""
    return sorted({round(cfg.epochs * (k + 1) / cfg.evals) for k in range(cfg.evals)})


def train_and_evaluate(x: np.ndarray, y: np.ndarray, cfg: RobotConfig, seed: int, evaluate) -> dict[str, Any]:
    """BC on (x, y); ``evaluate(policy) -> success rate`` after each epoch of ``eval_epochs``."""
    with seeded(seed):  # the seeded init leaves the global generator as it was
        policy = Policy(*feature_stats(x), cfg.hidden, cfg.layers)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    successes, losses, when = [], [], eval_epochs(cfg)
    for epoch in range(1, cfg.epochs + 1):
        policy.train()
        epoch_loss = []
        for idx in torch.randperm(len(xt), generator=gen).split(cfg.batch_size):
            loss = nn.functional.mse_loss(policy(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch_loss.append(loss.item())
        losses.append(float(np.mean(epoch_loss)))
        if epoch in when:
            policy.eval()
            successes.append(evaluate(policy))
    return {"successes": successes, "epochs": when, "losses": losses, "policy": policy}


def rollouts(env: MetaWorldTask, policy: Policy, cfg: RobotConfig, encode=None) -> dict[str, float]:
    """Success rate of ``policy`` over the evaluation episodes; ``encode(frame) -> (D,)`` (None: blind)."""
    horizon, wins, steps, t0 = cfg.horizon_of(env.task), 0, 0, time.perf_counter()
    for j in range(cfg.rollouts):
        obs = env.reset(EVAL_SEED + j)
        for _ in range(horizon):
            feats = None if encode is None else encode(env.render())[None]
            x = policy_inputs(feats, obs[None, PROPRIO].astype(np.float32), cfg.proprio)
            with torch.inference_mode():
                action = policy(torch.from_numpy(x))[0].numpy()
            obs, success = env.step(action)
            steps += 1
            if success:
                wins += 1
                break
    return {"success": wins / cfg.rollouts, "steps": steps, "seconds": time.perf_counter() - t0}


# --- the bench ------------------------------------------------------------------------------------------


class RobotBench:
    """Demos per task (cached), features per encoder (cached), BC + rollouts per seed."""

    def __init__(
        self, cfg: RobotConfig, image_size: int, cache_dir: str | Path, layers: str = "last"
    ) -> None:
        cfg.validate()
        import_metaworld()
        self.cfg, self.size, self.cache_dir, self.layers = (
            cfg,
            cfg.image_size or image_size,
            Path(cache_dir),
            layers,
        )
        self.demos = {t: load_or_collect_demos(t, cfg, self.size, self.cache_dir) for t in cfg.tasks}
        self.envs: dict[str, MetaWorldTask] = {}
        self.timing = {"demo_seconds": float(sum(d.seconds for d in self.demos.values()))}
        for kind in (
            "rollout",
            "blind",
        ):  # rollouts of vision policies (render + encode each step) / blind ones
            self.timing.update({f"{kind}_seconds": 0.0, f"{kind}_steps": 0.0})

    def env(self, task: str) -> MetaWorldTask:
        if task not in self.envs:
            self.envs[task] = MetaWorldTask(task, self.cfg.camera, self.size)
        return self.envs[task]

    def run(
        self, encoder: VisionEncoder | None, seed: int, weights: str | None = None
    ) -> dict[str, ProbeResult]:
        """``robot/<task>`` per task and ``robot`` (their mean); ``encoder=None`` runs the blind policy."""
        per_task = {}
        for task, demos in self.demos.items():
            feats = (
                None
                if encoder is None
                else cached_features(encoder, demos, self.layers, self.cache_dir, weights)
            )
            x = policy_inputs(feats, demos.proprio, self.cfg.proprio)
            encode = None if encoder is None else self._encode_fn(encoder)
            res = train_and_evaluate(
                x, demos.actions, self.cfg, seed, lambda p, t=task, e=encode: self._eval(t, p, e)
            )
            per_task[task] = ProbeResult(metrics={"success": max(res["successes"]), "success_final": res["successes"][-1]},
                                         protocol=self._protocol(task, demos, seed, res))  # fmt: skip
        mean = {
            k: float(np.mean([r.metrics[k] for r in per_task.values()])) for k in ("success", "success_final")
        }
        out = {f"robot/{t}": r for t, r in per_task.items()}
        out["robot"] = ProbeResult(metrics=mean, protocol={"head": "bc-mlp", "seed": seed, "tasks": list(per_task),
                                                           **self._common()})  # fmt: skip
        return out

    def _encode_fn(self, encoder: VisionEncoder):
        idx = layer_indices(self.layers, encoder.spec.num_layers)
        side = self.size - self.size % encoder.spec.patch_size
        return lambda frame: encode_batch(encoder, frame[None, :side, :side], idx)[0][0]

    def _eval(self, task: str, policy: Policy, encode) -> float:
        r = rollouts(self.env(task), policy, self.cfg, encode)
        kind = "blind" if encode is None else "rollout"
        self.timing[f"{kind}_seconds"] += r["seconds"]
        self.timing[f"{kind}_steps"] += r["steps"]
        log.info("robot %s (%s): success %.2f over %d rollouts, %d steps in %.1f s", task, kind, r["success"],
                 self.cfg.rollouts, r["steps"], r["seconds"])  # fmt: skip
        return r["success"]

    def _common(self) -> dict[str, Any]:
        c = self.cfg
        return {"image_size": self.size, "camera": c.camera, "layers": self.layers, "features": "cls",
                "proprio": c.proprio, "hidden": c.hidden, "mlp_layers": c.layers, "epochs": c.epochs, "lr": c.lr,
                "batch_size": c.batch_size, "evals": c.evals, "rollouts": c.rollouts, "demos": c.demos}  # fmt: skip

    def _protocol(self, task: str, demos: Demos, seed: int, res: dict[str, Any]) -> dict[str, Any]:
        return {"head": "bc-mlp", "seed": seed, "task": task, "horizon": self.cfg.horizon_of(task),
                "demo_frames": len(demos.frames), "eval_epochs": res["epochs"], "successes": res["successes"],
                "final_train_loss": res["losses"][-1], **self._common()}  # fmt: skip

    def info(self) -> dict[str, Any]:
        steps, secs = self.timing["rollout_steps"], self.timing["rollout_seconds"]
        return {**self.timing, "tasks": {t: {"episodes": len(d.seeds), "frames": len(d.frames), "cache_key": d.key,
                              "horizon": self.cfg.horizon_of(t)}
                          for t, d in self.demos.items()},
                "config": asdict(self.cfg), "image_size": self.size, "versions": versions(),
                "rollout_steps_per_s": steps / secs if secs else None}  # fmt: skip

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()
