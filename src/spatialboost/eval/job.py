"""One ``spatialboost probe`` job: every task on the same encoders with the same seeds, by one path.

``run_job`` builds one bench per kind for the job's tasks (``eval.benches``: 2D, 3D, robot), runs each bench on
every encoder for every seed, and merges everything into one summary: ``runs`` (one per encoder, probe and seed,
with its protocol), ``rows`` (``runner.aggregate``), the dataset and the benches' own facts (``depth_protocol``;
``benches``: each 3D/robot bench's data, timings and, for ``robot``, the blind proprioception-only reference).
``probe_before_after`` is a job of a base and a boosted encoder with a compact before/after table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from spatialboost.config import to_dict
from spatialboost.eval.benches import Bench, build_benches
from spatialboost.eval.features import encoder_identity
from spatialboost.eval.report import claim_report_dir, markdown_table, write_report
from spatialboost.eval.runner import (
    ProbeConfig,
    ProbeResults,
    aggregate,
    check_pairs,
    feature_cache_dir,
    probed_encoder,
    resolve_encoder,
    spec_dict,
)
from spatialboost.models.encoder_base import VisionEncoder

log = logging.getLogger(__name__)


def run_job(encoders: dict[str, Any], cfg: ProbeConfig, pairs: dict[str, str] | None = None, scene_fn=None):
    """Every task of ``cfg.tasks`` for every encoder, ``cfg.seeds`` seeds each; ``pairs``: boosted -> base."""
    encs = {name: resolve_encoder(e, cfg.encoder_seed) for name, e in encoders.items()}
    pairs = check_pairs(encs, pairs)
    probed = probed_encoder(encs, pairs)
    size = cfg.features.image_size or probed.spec.image_size
    seeds = list(range(cfg.seeds))
    identities = {name: encoder_identity(enc) for name, enc in encs.items()}
    benches = build_benches(cfg.tasks, cfg, size, feature_cache_dir(cfg), scene_fn)
    runs: list[dict[str, Any]] = []
    previews: dict[str, Any] = {}
    try:
        for bench in benches:
            for name, enc in encs.items():
                runs += _bench_runs(bench, name, enc, identities[name], seeds, previews)
            previews.update(bench.previews(probed))
    finally:
        for bench in benches:
            bench.close()
    fields: dict[str, Any] = {}
    for bench in reversed(benches):  # the first bench's dataset is the job's
        fields.update(bench.fields())
    summary = {"dataset": fields.pop("dataset"),
               "encoders": {n: {"spec": spec_dict(e), "identity": identities[n]} for n, e in encs.items()},
               "pairs": pairs, "seeds": seeds, **fields, "config": to_dict(cfg), "runs": runs,
               "rows": aggregate(runs, {p: b.n_test for b in benches for p in b.probes if b.n_test})}  # fmt: skip
    infos = {b.kind: info for b in benches if (info := b.info()) is not None}
    if infos:
        summary["benches"] = infos
    return ProbeResults(summary=summary, previews=previews)


def _bench_runs(
    bench: Bench, name: str, enc: VisionEncoder, identity: dict, seeds: list[int], previews
) -> list[dict]:
    """One bench on one encoder for every seed: its runs, probe by probe and seed by seed; seed 0's preview
    (the depth probe's predictions) kept for the report."""
    results = {}
    for seed in seeds:
        log.info("%s probes on %s (seed %d)", bench.kind, name, seed)
        results[seed] = bench.run(enc, seed, identity)
        for res in results[seed].values():
            if res.preview is not None and seed == seeds[0]:
                previews[name] = res.preview
    return [{"encoder": name, "probe": probe, "task": bench.task(probe), "seed": seed,
             "metrics": results[seed][probe].metrics, "protocol": results[seed][probe].protocol,
             **({"per_image": results[seed][probe].per_image} if results[seed][probe].per_image else {})}
            for probe in results[seeds[0]] for seed in seeds]  # fmt: skip


def probe_before_after(
    base: VisionEncoder | str | Path,
    boosted: VisionEncoder | str | Path,
    cfg: ProbeConfig | None = None,
    out: str | Path | None = None,
    scene_fn=None,
    plots: bool = True,
    others: dict[str, VisionEncoder | str | Path] | None = None,
) -> tuple[ProbeResults, str]:
    """Probe ``base`` and ``boosted`` (and ``others``, each also compared with ``base``: a control) with the
    same seeds; log and return a compact before/after table.

    ``cfg`` defaults to ``ProbeConfig()`` (synthetic benchmark, all tasks, 3 seeds). With ``out`` the full
    report (results.json, results.md, plots) is written there too.
    """
    others = dict(others or {})
    if {"base", "boosted"} & set(others):
        raise ValueError("probe_before_after: `others` cannot be named 'base' or 'boosted'")
    cfg = cfg or ProbeConfig()
    report = None
    if out is not None:
        cfg.out = str(out)
        report = claim_report_dir(out)  # before any work: never into someone's folder
        if not cfg.features.cache_dir:
            report.subdir("feature-cache")
    encoders = {"base": base, "boosted": boosted, **others}
    pairs = {name: "base" for name in encoders if name != "base"}
    results = run_job(encoders, cfg, pairs=pairs, scene_fn=scene_fn)
    table = markdown_table(results.summary, headline_only=True)
    log.debug("frozen-feature probes, before vs after:\n%s", table)  # the caller prints it once
    if report is not None:
        write_report(results, report, plots=plots)
        report.finish()
    return results, table
