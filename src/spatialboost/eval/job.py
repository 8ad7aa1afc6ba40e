"""One ``spatialboost probe`` job: the 2D tasks and the bench tasks (3D, robot) on the same encoders and seeds.

``run_job`` runs the 2D tasks through ``runner.run_probes`` and the others through ``benches.build_benches``, and
merges everything into one summary (``runs``/``rows`` as in ``runner``, plus ``benches`` with each bench's data,
timings and, for ``robot``, the blind proprioception-only reference).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from spatialboost.config import to_dict
from spatialboost.eval.benches import build_benches, is_bench_task
from spatialboost.eval.features import encoder_identity
from spatialboost.eval.runner import (
    ProbeResults,
    _spec_dict,
    aggregate,
    feature_cache_dir,
    probed_encoder,
    resolve_encoder,
    run_probes,
)

log = logging.getLogger(__name__)


def run_job(encoders: dict[str, Any], cfg, pairs: dict[str, str] | None = None, scene_fn=None):
    """Every task of ``cfg.tasks`` (a ``runner.ProbeConfig``) for every encoder, the same seeds for all."""
    encs = {name: resolve_encoder(e, cfg.encoder_seed) for name, e in encoders.items()}
    pairs = dict(pairs or {})
    tasks_2d = [t for t in cfg.tasks if not is_bench_task(t)]
    bench_tasks = [t for t in cfg.tasks if is_bench_task(t)]
    results = run_probes(encs, replace(cfg, tasks=tasks_2d), pairs, scene_fn) if tasks_2d else None
    if not bench_tasks:
        return results
    seeds = results.summary["seeds"] if results else list(range(cfg.seeds))
    size = cfg.features.image_size or probed_encoder(encs, pairs).spec.image_size
    cache_dir = feature_cache_dir(cfg)
    benches = build_benches(
        bench_tasks, cfg.data.spec, cfg.probes3d, cfg.robot, size, cache_dir, cfg.features.layers
    )
    runs = []
    try:
        for name, enc in encs.items():
            identity = encoder_identity(enc)
            for seed in seeds:
                for bench in benches:
                    log.info("%s probes on %s (seed %d)", bench.kind, name, seed)
                    for probe, res in bench.run(enc, seed, identity).items():
                        runs.append({"encoder": name, "probe": probe, "task": bench.kind, "seed": seed,
                                     "metrics": res.metrics, "protocol": res.protocol})  # fmt: skip
    finally:
        for bench in benches:
            bench.close()
    infos = {b.kind: b.info() for b in benches}
    if results is None:
        summary = _bench_summary(encs, cfg, pairs, seeds, infos)
        results = ProbeResults(summary=summary)
    results.summary["runs"] += runs
    results.summary["rows"] = aggregate(results.summary["runs"])
    results.summary["benches"] = infos
    return results


def _bench_summary(encs, cfg, pairs, seeds, infos) -> dict[str, Any]:
    first = next(iter(infos.values()))
    if first["kind"] == "robot":  # train = expert episodes, test = rollouts per evaluation
        tasks = first["tasks"]
        dataset = {"spec": "meta-world:" + ",".join(tasks), "train": "expert demos", "test": "rollouts",
                   "n_train": sum(t["episodes"] for t in tasks.values()), "n_test": first["config"]["rollouts"]}  # fmt: skip
    else:
        splits = first["splits"]
        dataset = {"spec": cfg.data.spec, "train": splits.get("train", {}).get("identity", ""),
                   "test": splits["test"]["identity"], "n_train": splits.get("train", {}).get("scenes", 0),
                   "n_test": splits["test"]["scenes"]}  # fmt: skip
    return {"dataset": dataset, "encoders": {n: {"spec": _spec_dict(e), "identity": encoder_identity(e)}
                                             for n, e in encs.items()},
            "pairs": pairs, "seeds": seeds, "config": to_dict(cfg), "runs": [], "rows": []}  # fmt: skip
