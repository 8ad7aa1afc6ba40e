"""The study's report, generated from the arms' result files (never typed in by hand).

``collect(OUT)`` reads ``OUT/arms/*/*.json`` into one summary (mean +- std over seeds per arm and column,
the diagnostics, the val search and what is still missing); ``write_report`` writes ``results.json``,
``results.md`` and the PNG plots. In a ``results.md`` that already exists, everything from the line
``<!-- discussion -->`` on is kept (the hand-written discussion).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from spatialboost.eval.report import save_png
from spatialboost.io import atomic_write_json, atomic_write_text
from spatialboost.noise import NOISE_RULE, binomial_se, paired_item_se, verdict
from spatialboost.studies.replicate.benches import bench_columns, bench_table
from spatialboost.studies.replicate.columns import on_seeds, seed_stats
from spatialboost.studies.replicate.probing import COLUMNS, HEAD_SEED_STRIDE, depth_heads_of
from spatialboost.studies.replicate.study import ARMS, DATA, TABLES

log = logging.getLogger(__name__)
DISCUSSION = "<!-- discussion -->"


# --- collect ------------------------------------------------------------------------------------------------


def collect(out: str | Path) -> dict[str, Any]:
    out = Path(out)
    records = [json.loads(p.read_text()) for p in sorted(out.glob("arms/*/seed*.json"))]
    arms: dict[str, dict[str, Any]] = {}
    for rec in records:
        key = rec["arm"] if rec["split"] == "test" else f"{rec['arm']}@val"
        label = ARMS.get(rec["arm"]).label if rec["arm"] in ARMS else rec["label"]  # today's wording
        arms.setdefault(key, {"label": label, "split": rec["split"], "records": []})["records"].append(rec)
    summary = {"arms": {k: _aggregate(v) for k, v in sorted(arms.items())},
               "tables": [{"key": t.key, "title": t.title, "paper": t.paper, "arms": list(t.arms)} for t in TABLES],
               "config": _read(out / "study-config.json"), "tuning": _read(out / "tuning.json"),
               "reading_bound": _read(out / "reading-bound.json"),
               "data": _data_content(out)}  # fmt: skip
    summary["cls_majority"] = majority_accuracy(out, summary["config"])
    summary["depth_heads"] = depth_heads_state(records, summary["config"])
    summary["missing"] = missing_jobs(summary)
    summary["complete"] = not summary["missing"]
    return summary


def depth_heads_state(records: list[dict[str, Any]], cfg: dict[str, Any]) -> dict[str, Any]:
    """The study's depth heads per encoder and the records probed with fewer (written before it asked for
    them; the next study run re-probes them from their saved encoders)."""
    want = cfg.get("sizes", {}).get("depth_heads", 1)
    short = [f"{r['arm']} seed {r['seed']}" for r in records if len(depth_heads_of(r)) < want]
    return {"study": want, "short": short}


def _heads_text(summary: dict[str, Any]) -> str:
    heads = summary.get("depth_heads") or {"study": 1, "short": []}
    if heads["study"] <= 1:
        text = "The depth probe trains one head per encoder (its RMSE varies by ~2% from head to head)."
    else:
        text = (f"The depth columns are the mean of {heads['study']} probe heads per encoder (seeds s, "
                f"s + {HEAD_SEED_STRIDE}, ...; one head's RMSE varies by ~2% on a fixed encoder).")  # fmt: skip
    if heads["short"]:
        text += (f" **Records with fewer depth heads: {len(heads['short'])}** ({', '.join(heads['short'][:6])}"
                 f"{', ...' if len(heads['short']) > 6 else ''}): run the study command again; it re-probes them "
                 "from their saved encoders, training nothing.")  # fmt: skip
    return text


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _aggregate(arm: dict[str, Any]) -> dict[str, Any]:
    recs = sorted(arm["records"], key=lambda r: r["seed"])
    seeds = [r["seed"] for r in recs]  # the probe-head seed is the study seed
    cols = {col: seed_stats([r["metrics"][p][m] for r in recs], seeds) for (p, m), col in COLUMNS.items()}
    for (
        p,
        m,
    ), col in COLUMNS.items():  # per-scene values where every seed kept them: the scene-sampling term
        per_scene = [r.get("per_scene", {}).get(p, {}).get(m) for r in recs]
        if all(per_scene):
            cols[col]["per_item"] = per_scene
    return {"label": arm["label"], "split": arm["split"], "seeds": seeds, "columns": cols,
            "seconds": [r["seconds"] for r in recs], "recipe": recs[0]["recipe"],
            "trainer": recs[0]["arm_config"]["trainer"],
            "diagnostics": {r["seed"]: r["diagnostics"] for r in recs}, "base": recs[0].get("base", {}),
            "benches": bench_columns(recs)}  # fmt: skip


def _data_content(out: Path) -> dict[str, Any]:
    from spatialboost.studies.replicate.diagnostics import spatial_content

    found = {}
    for name in [*DATA, "diag-pixel"]:
        if (out / "data" / name / "manifest.json").is_file():
            found[name] = spatial_content(out / "data" / name)
    return found


def majority_rate(labels: np.ndarray) -> float:
    """Accuracy of always answering the most frequent class (labels < 0: unlabelled, left out)."""
    labels = np.asarray(labels)
    return float(np.bincount(labels[labels >= 0]).max() / max(1, (labels >= 0).sum()))


def majority_accuracy(out: Path, cfg: dict[str, Any]) -> dict[str, float]:
    """Accuracy of always answering the most frequent class, per probe split (from the feature cache)."""
    cache = Path(cfg.get("cache_dir") or out / "cache") / "features"
    sizes = cfg.get("sizes", {})
    found = {}
    for split in ("val", "test"):
        for path in sorted(cache.glob(f"*-synthetic-{split}-*/label.npy")):
            labels = np.load(path)
            if len(labels) == sizes.get(f"probe_{split}"):
                found[split] = majority_rate(labels)
                break
    return found


def planned_jobs(summary: dict[str, Any]) -> list[tuple[str, str, set[int], set[int]]]:
    """(arm, its summary key, seeds wanted, seeds done) for every arm the study's config selects."""
    cfg = summary.get("config") or {}
    seeds, names, search = cfg.get("seeds", 0), cfg.get("arms") or ARMS.names(), cfg.get("search", True)
    plan = []
    for name in names:
        arm = ARMS.get(name)
        if (arm.search or arm.tuned) and not search:
            continue
        key = f"{name}@val" if arm.search else name
        have = set(summary["arms"].get(key, {}).get("seeds", []))
        plan.append((name, key, set(range(cfg.get("val_seeds", 1) if arm.search else seeds)), have))
    return plan


def replan(summary: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with the plan of ``plan`` (a StudyConfig as a dict: its arms, seeds, val seeds and search), so a
    study run in several commands (each writes its own config) is reported as one."""
    keys = ("arms", "seeds", "val_seeds", "search")
    out = {**summary, "config": {**(summary.get("config") or {}), **{k: plan[k] for k in keys}}}
    out["missing"] = missing_jobs(out)
    out["complete"] = not out["missing"]
    return out


def missing_jobs(summary: dict[str, Any]) -> list[str]:
    return [f"{name} seed {s}" for name, _, want, have in planned_jobs(summary) for s in sorted(want - have)]


def plan_table(summary: dict[str, Any]) -> str:
    """The study's plan and where it stands: per arm, seeds done of planned, measured minutes per job (training
    + probes; arms that share a training run with another arm cost only their probes) and the minutes left at
    that rate (the arms not started yet: '?')."""
    rows = [
        "| arm | split | seeds done / planned | min per job (measured) | min left (est.) |",
        "|---|---|---|---|---|",
    ]
    left_total, unknown = 0.0, 0
    for name, key, want, have in planned_jobs(summary):
        secs = summary["arms"].get(key, {}).get("seconds", [])
        per_job = sum(secs) / len(secs) / 60 if secs else None
        n_left = len(want - have)
        left = per_job * n_left if per_job is not None else None
        left_total += left or 0.0
        unknown += n_left if per_job is None else 0
        rows.append(f"| {name} | {'val' if key.endswith('@val') else 'test'} | {len(want & have)} / {len(want)} | "
                    f"{'' if per_job is None else f'{per_job:.1f}'} | "
                    f"{'?' if left is None and n_left else f'{left or 0:.0f}'} |")  # fmt: skip
    more = f", plus {unknown} job(s) of arms not started yet" if unknown else ""
    return "\n".join(rows) + f"\n\nEstimated time left: {left_total:.0f} min of single-job compute{more}."


# --- markdown -----------------------------------------------------------------------------------------------


def cell(col: dict[str, Any]) -> str:
    return f"{col['mean']:.4f} ± {col['std']:.4f}" if col["n"] > 1 else f"{col['mean']:.4f}"


def table_head(head: list[str]) -> list[str]:
    """A markdown table's header and rule lines."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def rel_change(base: float, value: float) -> str:
    return f"{100.0 * (value - base) / base:+.1f}%" if base else "n/a"


def scene_change(base: dict[str, Any], arm: dict[str, Any]) -> str:
    """``rel_change`` of two columns over their common seeds, with ± the paired standard error over the scored
    scenes (in % of the base) where both carry per-scene values: how far the same comparison moves on other
    scenes."""
    b = on_seeds(base, arm.get("seeds"))
    text = rel_change(b["mean"], arm["mean"])
    se = paired_item_se(b, arm)
    return f"{text} (± {100.0 * se / b['mean']:.1f} scenes)" if se and b["mean"] else text


def beyond_noise(base: dict[str, Any], arm: dict[str, Any], n_test: int | None) -> str:
    """The columns where ``arm`` differs from ``base`` beyond noise (``spatialboost.noise``: seed stds, plus an
    accuracy's binomial s.e. over ``n_test`` images), each said better or worse; "none"; or why it cannot say."""
    if base["depth RMSE (m)"]["n"] < 2 or arm["depth RMSE (m)"]["n"] < 2:
        return "1 seed: no noise estimate"
    out = []
    for (_, metric), col in COLUMNS.items():
        b, a = on_seeds(base[col], arm[col].get("seeds")), dict(arm[col])
        if metric == "top1" and n_test:
            for row in (b, a):
                row["sampling_se"] = binomial_se(row["mean"], n_test)
        said = verdict(b, a, metric)
        if said != "within noise":
            out.append(f"{col} {said}")
    return ", ".join(out) or "none"


def arm_table(summary: dict[str, Any], names: list[str]) -> str:
    """Rows = the arms that ran, columns = the six probe numbers (mean ± std over seeds) + depth RMSE change vs
    base + the columns that differ from the base beyond noise; the arms of ``names`` that did not run are listed
    in one line under the table (a study run with ``--arms`` runs a few of each table's rows)."""
    arms = summary["arms"]
    base_cols = arms.get("base", {}).get("columns")
    base = (base_cols or {}).get("depth RMSE (m)", {}).get("mean")
    n_test = (summary.get("config") or {}).get("sizes", {}).get("probe_test")
    head = [
        "arm",
        "seeds",
        *COLUMNS.values(),
        "image gain after stage 3",
        "RMSE vs base",
        "beyond noise vs base",
    ]
    lines = table_head(head)
    missing = [ARMS.get(name.split("@")[0]).label for name in names if name not in arms]
    for name in (n for n in names if n in arms):
        a = arms[name]
        cells = [cell(a["columns"][c]) for c in COLUMNS.values()]
        gain = gain_stats(a["diagnostics"], "stage3")
        lines.append(f"| {a['label']} | {len(a['seeds'])} | " + " | ".join(cells)
                     + f" | {cell(gain) if gain else ''} "
                     f"| {scene_change(base_cols['depth RMSE (m)'], a['columns']['depth RMSE (m)']) if base and name != 'base' else ''} "
                     f"| {beyond_noise(base_cols, a['columns'], n_test) if base_cols and name != 'base' else ''} |")  # fmt: skip
    if len(lines) == 2:
        lines = ["_No arm of this table ran in this study._"]
    return "\n".join(lines) + (f"\n\nNot run in this study: {'; '.join(missing)}." if missing else "")


def gain_stats(diags: dict[Any, dict[str, Any]], stage: str, level: str = "all", key: str = "gain"):
    """Mean ± std over seeds of a recorded image-gain number (None when the arm has none)."""
    values = [d["image_gain"][stage][level][key] for d in diags.values()
              if d.get("image_gain", {}).get(stage, {}).get(level)]  # fmt: skip
    return seed_stats(values) if values else None


def shared_reading_arm(summary: dict[str, Any]) -> str | None:
    """The arm whose records carry the seeds' shared stage-2 reading for the most seeds (every arm that trains
    stage 3 through the plain shared stages 1+2 records the same numbers; ``sb-dual`` first on a tie)."""

    def seeds(arm: dict[str, Any]) -> int:
        return sum(
            bool(d.get("image_gain", {}).get("stage2", {}).get("all")) for d in arm["diagnostics"].values()
        )

    shared = [(seeds(a), n == "sb-dual", n) for n, a in summary["arms"].items()
              if n.removesuffix("@val") in ARMS and ARMS.get(n.removesuffix("@val")).shared_stage2]  # fmt: skip
    best = max((c for c in shared if c[0]), default=None)
    return best[2] if best else None


def reading_table(summary: dict[str, Any]) -> str:
    """Does the stage-2 VLM read the image? Per CoT level, over the seeds' shared stages 1+2."""
    name = shared_reading_arm(summary)
    if name is None:
        return "_No image gain was measured (the recipe ran without held-out image-gain data)._"
    diags = {
        s: d for s, d in summary["arms"][name]["diagnostics"].items() if d.get("image_gain", {}).get("stage2")
    }
    head = ["answers", "loss, right images", "loss, other scenes' images", "image gain (nats/token)",
            "loss, text-only model", "beyond noise?"]  # fmt: skip
    lines = table_head(head)
    names = {"numbers": "new numbers (all answers)", "pixel_numbers": "new numbers (pixel answers)"}
    for level in ("all", "pixel", "object", "scene", "caption", *names):
        gain = gain_stats(diags, "stage2", level)
        if gain is None:
            continue
        right, other = (
            gain_stats(diags, "stage2", level, "loss_right"),
            gain_stats(diags, "stage2", level, "loss_other"),
        )
        blind = gain_stats(diags, "blind", level, "loss_right")
        noise = gain_stats(diags, "stage2", level, "stderr")
        beyond = "yes" if gain["mean"] > 2 * max(gain["std"], noise["mean"]) else "no"
        lines.append(f"| {names.get(level, level)} | {cell(right)} | {cell(other)} | {cell(gain)} "
                     f"| {cell(blind) if blind else ''} | {beyond} |")  # fmt: skip
    lines += ["", f"Training seeds {seed_span([int(s) for s in diags])}, as recorded with `{name}` (every arm that trains "
              "stage 3 through the shared stages 1+2 records the same).", "",
              "New numbers: the tokens of numbers an answer states that appear nowhere earlier in the "
              "conversation (\"2.94\" in \"The depth at (34, 26) is 2.94 m.\", not the copied coordinates): "
              "where only the image can help."]  # fmt: skip
    acc = [(d["image_gain"]["stage2"]["choice"], d["image_gain"].get("blind", {}).get("choice"))
           for d in diags.values() if "choice" in d.get("image_gain", {}).get("stage2", {})]  # fmt: skip
    if acc:
        right = seed_stats([a["acc_right"] for a, _ in acc])
        other = seed_stats([a["acc_other"] for a, _ in acc])
        blind = [b["acc_right"] for _, b in acc if b]
        n = acc[0][0]["questions"]
        lines += ["", f"Balanced A/B questions ({n} held-out, chance 50%, s.e. about {0.5 / n**0.5:.3f}): accuracy "
                  f"{cell(right)} with the right images, {cell(other)} with other scenes' images"
                  + (f", {cell(seed_stats(blind))} for the text-only model" if blind else "") + "."]  # fmt: skip
    bound = summary.get("reading_bound") or {}
    if bound:
        lines += ["", f"Upper bound (rung 1 of the ladder): an MLP on the frozen base features of the two places "
                  f"each A/B question names, trained on the training conversations' A/B questions "
                  f"({bound['train_questions']}), answers {bound['acc_right']:.3f} of the held-out ones with the "
                  f"right images and {bound['acc_other']:.3f} with other scenes' images ({bound['test_questions']} "
                  "questions). In stage 2 the encoder is frozen, so this bounds what the VLM can reach."]  # fmt: skip
    lines += depth_bound_lines(bound.get("depth") or {}, diags)
    return "\n".join(lines)


def depth_bound_lines(depth: dict[str, Any], diags: dict[Any, dict[str, Any]]) -> list[str]:
    """Rung 1 for the stated depths (``diagnostics.depth_value_probe``) and what a perfect reading could save."""
    if not depth:
        return []
    saved, se = depth["nats_per_value"], depth["nats_per_value_stderr"]
    verdict = "beyond noise" if abs(saved) > 2 * se else "within noise of zero"
    lines = ["", f"Upper bound for the numbers: on {depth['test_points']} held-out queried points, a Gaussian MLP "
             f"on the point's coordinates (what the text says) predicts the depth with RMSE "
             f"{depth['rmse_text_only']:.3f} m; adding the point's frozen base feature gives "
             f"{depth['rmse_right']:.3f} m. The feature saves {saved:+.3f} ± {se:.3f} nats per stated depth "
             f"({verdict}), {depth['nats_per_value_token']:+.4f} nats per number token "
             f"({depth['tokens_per_value']:.1f} tokens a depth): the most a stage-2 VLM on these features can gain "
             "on the pixel answers' new numbers."]  # fmt: skip
    blind = gain_stats(diags, "blind", "pixel_numbers", "loss_right")
    pixel = [
        d["image_gain"]["stage2"]
        for d in diags.values()
        if "pixel_numbers" in d.get("image_gain", {}).get("stage2", {})
    ]
    if blind and pixel:
        share = pixel[0]["pixel_numbers"]["tokens"] / pixel[0]["pixel"]["tokens"]
        lines += ["", f"A perfect reading could save at most the text-only model's loss on those tokens, "
                  f"{blind['mean']:.3f} nats per number token; they are {share:.0%} of the pixel answers' tokens, so "
                  f"at most {blind['mean'] * share:.3f} nats per pixel answer token with an encoder that knew every "
                  "depth exactly."]  # fmt: skip
    return lines


def seed_span(seeds: list[int]) -> str:
    """ "0", "0-2" (consecutive) or "0, 2"."""
    seeds = sorted(seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def search_table(summary: dict[str, Any]) -> str:
    names = [k for k in summary["arms"] if k.endswith("@val")]
    if not names:
        return "_The val search did not run._"
    ref = summary["arms"].get("val-lr0.001@val", {}).get("columns", {})
    base_col = summary["arms"].get("val-base@val", {}).get("columns", {}).get("depth RMSE (m)")
    head = ["search arm (val; mean over its val seeds)", "val seeds", "lr", "gate init", "stage-3 steps", "stage-2 steps", "data", "LM width",
            "depth RMSE", "AbsRel",
            "seg mIoU", "cls linear", "RMSE vs untuned", "RMSE vs base"]  # fmt: skip
    lines = table_head(head)
    for name in sorted(names, key=lambda n: summary["arms"][n]["columns"]["depth RMSE (m)"]["mean"]):
        a, r = summary["arms"][name], dict(summary["arms"][name]["recipe"])
        c = a["columns"]
        r.setdefault(
            "instruct_steps", (summary.get("config") or {}).get("sizes", {}).get("instruct_steps", "")
        )
        if a.get("trainer") == "none":
            r = {k: "-" for k in r}
        untuned = ref.get("depth RMSE (m)", {}).get("mean")
        lines.append(f"| {a['label']} | {seed_span(a['seeds'])} | {r['encoder_lr']} | {r['gate_init']} | {r['encoder_steps']} "
                     f"| {r.get('instruct_steps', '')} | {r['data']} "
                     f"| {r['llm_width']} | {c['depth RMSE (m)']['mean']:.4f} | {c['AbsRel']['mean']:.4f} "
                     f"| {c['seg mIoU']['mean']:.4f} | {c['cls linear']['mean']:.4f} "
                     f"| {rel_change(untuned, c['depth RMSE (m)']['mean']) if untuned else ''} "
                     f"| {scene_change(base_col, c['depth RMSE (m)']) if base_col else ''} |")  # fmt: skip
    tuning = summary.get("tuning") or {}
    if tuning:
        lines.append(f"\nChosen for the tuned arm (lowest val depth RMSE): **{tuning['chosen']}**.")
    return "\n".join(lines)


def _ends_mean(curve: list[list[float]]) -> tuple[float, float]:
    """Mean loss of the first and of the last 10% of logged steps (at least one each)."""
    k = max(1, len(curve) // 10)
    return float(np.mean([x[1] for x in curve[:k]])), float(np.mean([x[1] for x in curve[-k:]]))


def _mean_over_seeds(diags: dict[Any, dict[str, Any]], key: str) -> float | None:
    vals = [d[key] for d in diags.values() if key in d]
    return float(np.mean(vals)) if vals else None


def diagnostics_table(summary: dict[str, Any]) -> str:
    head = ["arm", "split", "stage-3 loss, first -> last 10% of steps", "gate weight on frozen Attn", "Attn+ rel. change",
            "weight rel. change"]  # fmt: skip
    lines = table_head(head)
    for _name, a in summary["arms"].items():
        diags = a["diagnostics"]
        curves = [d["stage3_loss"] for d in diags.values() if d.get("stage3_loss")]
        joint = [d["joint_loss"] for d in diags.values() if d.get("joint_loss")]
        loss = ""
        if curves:
            first, last = zip(*(_ends_mean(c) for c in curves), strict=True)
            loss = f"{np.mean(first):.4f} -> {np.mean(last):.4f}"
        elif joint:
            loss = (
                f"{np.mean([j[0] for j in joint]):.4f} -> {np.mean([j[-1] for j in joint]):.4f} (head loss)"
            )
        alpha, move = (
            _mean_over_seeds(diags, "alpha_frozen_mean"),
            _mean_over_seeds(diags, "attn_plus_rel_change_mean"),
        )
        weight = _mean_over_seeds(diags, "weight_rel_change")
        if not (loss or alpha or weight):
            continue
        fmt = lambda x: "" if x is None else f"{x:.4f}"  # noqa: E731
        lines.append(f"| {a['label']} | {a['split']} | {loss} | {fmt(alpha)} | {fmt(move)} | {fmt(weight)} |")
    return "\n".join(lines)


def scene_spread(base: list[list[float]], arm: list[list[float]]) -> dict[str, float]:
    """How a per-scene depth change is spread (each scene's values averaged over the seeds both sides have;
    scenes NaN in any seed left out): the share of scenes the arm scores better, and the change (% of the base)
    on the quarter of scenes the base scores worst and on the other three quarters."""
    b, a = np.asarray(base, np.float64).mean(0), np.asarray(arm, np.float64).mean(0)  # NaN in any seed: NaN
    keep = ~(np.isnan(a) | np.isnan(b))
    b, a = b[keep], a[keep]
    order = np.argsort(b)
    worst, rest = order[len(b) - len(b) // 4 :], order[: len(b) - len(b) // 4]
    change = lambda idx: float(100.0 * (a[idx] - b[idx]).mean() / b[idx].mean())  # noqa: E731
    return {"better": float(np.mean(a < b)), "worst_quarter": change(worst), "rest": change(rest)}


def spread_table(summary: dict[str, Any], names: list[str]) -> str:
    """``scene_spread`` of every named test arm against the base, over the arm's seeds (an arm with a seed the
    base lacks is left out)."""
    base = summary["arms"].get("base", {}).get("columns", {}).get("depth RMSE (m)", {})
    head = ["arm", "seeds", "depth RMSE vs base", "scenes better", "the base's worst quarter of scenes",
            "the other three quarters"]  # fmt: skip
    lines = table_head(head)
    for name in names:
        col = summary["arms"].get(name, {}).get("columns", {}).get("depth RMSE (m)", {})
        if name == "base" or not (base.get("per_item") and col.get("per_item")):
            continue
        if not set(col["seeds"]) <= set(base["seeds"]):
            continue
        spread = scene_spread(on_seeds(base, col["seeds"])["per_item"], col["per_item"])
        lines.append(f"| {summary['arms'][name]['label']} | {seed_span(col['seeds'])} | {scene_change(base, col)} "
                     f"| {spread['better']:.0%} | {spread['worst_quarter']:+.1f}% | {spread['rest']:+.1f}% |")  # fmt: skip
    return "\n".join(lines) if len(lines) > 2 else "_No per-scene depth values were recorded._"


def stage2_accuracy(diagnostics: dict[Any, Any]) -> dict[int, float]:
    """seed -> the stage-2 VLM's held-out A/B accuracy with the right images, where the arm's records have it."""
    out = {}
    for seed, d in diagnostics.items():
        choice = (d.get("image_gain") or {}).get("stage2", {}).get("choice")
        if choice:
            out[int(seed)] = choice["acc_right"]
    return out


def reading_depth_rows(summary: dict[str, Any], names: list[str], min_seeds: int = 4) -> list[dict[str, Any]]:
    """Per LLM arm with ``min_seeds`` seeds or more: each seed's stage-2 A/B accuracy and paired depth change
    (%, against the base at the same probe seed), and their Pearson correlation over the seeds."""
    from scipy.stats import pearsonr

    base = summary["arms"].get("base", {}).get("columns", {}).get("depth RMSE (m)", {})
    rows = []
    for name in names:
        arm = summary["arms"].get(name, {})
        col, acc = arm.get("columns", {}).get("depth RMSE (m)"), stage2_accuracy(arm.get("diagnostics", {}))
        seeds = [s for s in (col or {}).get("seeds", []) if s in acc and s in base.get("seeds", [])]
        if len(seeds) < min_seeds or len(set(acc[s] for s in seeds)) < 2:
            continue
        b, a = on_seeds(base, seeds), on_seeds(col, seeds)
        change = [100.0 * (v / bv - 1.0) for v, bv in zip(a["values"], b["values"], strict=True)]
        r, pvalue = pearsonr([acc[s] for s in seeds], change)
        rows.append({"arm": name, "seeds": seeds, "accuracy": [acc[s] for s in seeds], "change": change,
                     "r": float(r), "p": float(pvalue)})  # fmt: skip
    return rows


def reading_depth_table(summary: dict[str, Any], names: list[str], min_seeds: int = 4) -> str:
    rows = reading_depth_rows(summary, names, min_seeds)
    head = [
        "arm",
        "seeds",
        "stage-2 A/B accuracy, right images",
        "depth RMSE change vs base",
        "Pearson r (p)",
    ]
    lines = table_head(head)
    for row in rows:
        lines.append(f"| {summary['arms'][row['arm']]['label']} | {seed_span(row['seeds'])} "
                     f"| {' / '.join(f'{100 * x:.1f}' for x in row['accuracy'])}% "
                     f"| {' / '.join(f'{x:+.1f}' for x in row['change'])}% | {row['r']:+.2f} ({row['p']:.3f}) |")  # fmt: skip
    return (
        "\n".join(lines)
        if rows
        else f"_No arm has {min_seeds} or more seeds with a measured stage-2 A/B accuracy._"
    )


def answers_table(summary: dict[str, Any]) -> str:
    head = ["arm (seed 0)", "answer loss before -> after", "token acc. before -> after",
            "digit-token acc. before -> after", "loss with other scenes' images before -> after"]  # fmt: skip
    lines = table_head(head)
    for _name, a in summary["arms"].items():
        ans = a["diagnostics"].get(0, a["diagnostics"].get("0", {})).get("answers")
        if not ans:
            continue
        b, f = ans["before"], ans["after"]
        ob, of = ans.get("before_other_images"), ans.get("after_other_images")
        other = f"{ob['loss']:.4f} -> {of['loss']:.4f}" if ob and of else "not measured"
        lines.append(f"| {a['label']} | {b['loss']:.4f} -> {f['loss']:.4f} | {b['token_acc']:.4f} -> "
                     f"{f['token_acc']:.4f} | {b['digit_acc']:.4f} -> {f['digit_acc']:.4f} | {other} |")  # fmt: skip
    return "\n".join(lines) if len(lines) > 2 else "_No answer-token diagnostics were run._"


def data_table(summary: dict[str, Any]) -> str:
    head = ["dataset", "samples", "images/sample", "queried points/image", "answer turns/sample",
            "answer chars/sample", "digit share of answers"]  # fmt: skip
    lines = table_head(head)
    for name, d in summary["data"].items():
        lines.append(
            f"| {name} | {d['samples']} | {d['images_per_sample']:.2f} | {d['points_per_image']:.2f} | "
            f"{d['turns_per_sample']:.1f} | {d['answer_chars_per_sample']:.0f} | {d['digit_share']:.3f} |"
        )
    return "\n".join(lines)


def markdown(
    summary: dict[str, Any], command: str = "", commit: str = "", plots: list[str] | None = None
) -> str:
    cfg = summary.get("config") or {}
    state = (
        "complete" if summary["complete"] else f"**PARTIAL**: {len(summary['missing'])} arm-seed jobs missing"
    )
    parts = ["# SpatialBoost mini-replication at CPU scale", "",
             "_Generated by `spatialboost.studies.replicate.report` from the arms' result files; numbers are never typed "
             "in by hand._", "", f"- command: `{command}`" if command else "", f"- commit: `{commit}`" if commit
             else "", f"- state: {state}" + (f" ({', '.join(summary['missing'][:12])})" if summary["missing"] else ""),
             f"- seeds: {cfg.get('seeds')}; sizes: `{json.dumps(cfg.get('sizes', {}))}`",
             f"- untuned recipe `{cfg.get('recipe_name', 'paper-text')}`: `{json.dumps(cfg.get('recipe', {}))}`", _base_line(summary), _time_line(summary), "",
             "Cells: mean ± std (sample std) over seeds, probes on held-out synthetic test scenes; the probe head "
             f"seed is the study seed. {_heads_text(summary)} Depth RMSE/AbsRel: lower is better; delta1, mIoU, accuracy: higher is better. "
             f"'beyond noise vs base': {NOISE_RULE} (arms and base share the probe seeds, so the paired rule "
             "applies).",
             _majority_line(summary),
             ""]  # fmt: skip
    parts += ["## Plan and progress", "", plan_table(summary), ""]
    for t in summary["tables"]:
        parts += [
            f"## Table {t['key']}: {t['title']}",
            "",
            f"Paper: {t['paper']}",
            "",
            arm_table(summary, t["arms"]),
            "",
        ]
        parts += bench_table(summary) if t["key"] == "A" else []
    parts += ["## Hyper-parameter search (val split, the val seeds each row names; one factor at a time from the "
              "untuned recipe)", "",
              "RMSE vs base: ± the paired standard error over the val scenes (128 at the real sizes): the val "
              "split has half the test split's scenes, so its picks carry √2 times the scene noise of a test "
              "number.", "",
              search_table(summary), "", "## Diagnostics", "",
              "### Does the stage-2 VLM read the image? (held-out conversations, seeds' shared stages 1+2)", "",
              "Image gain = answer-token loss with other scenes' images minus loss with the right ones; a text-only "
              "model is the same LM trained with every image feature zeroed. Beyond noise: the mean gain exceeds "
              "twice both its seed std and its per-conversation standard error.", "",
              reading_table(summary), "", "### Where the depth change comes from (test scenes)", "",
              "Each scene's depth RMSE averaged over the seeds, arm against base. The quarter of scenes the base "
              "scores worst is picked by the base's own errors, so any other encoder tends to gain there and lose "
              "a little elsewhere (regression to the mean): read a row against the no-language control and the "
              "linear heads, not against zero. A gain that holds on the other three quarters is a broad one.", "",
              spread_table(summary, [n for n in summary["arms"] if not n.endswith("@val")]), "",
              "### Does the depth change follow the stage-2 VLM's errors? (per training seed)", "",
              "Each seed's shared stage-2 VLM answers the held-out A/B questions with some accuracy before stage 3 "
              "trains the encoder through it; the seed's depth change is paired with the base at the same probe "
              "seed. A positive r says stage 3 lowered depth RMSE more where the frozen VLM answered worse. A "
              "correlation "
              "over a handful of seeds, not a controlled experiment (the stage-2 arms of the search table are).", "",
              reading_depth_table(summary, [n for n in summary["arms"] if not n.endswith("@val")]), "",
              "### Training movement", "", diagnostics_table(summary),
              "", "### Pixel-level answers of the frozen LLM (held-out pixel-only conversations)", "",
              answers_table(summary), "", "### Spatial content of the conversations", "", data_table(summary), ""]  # fmt: skip
    if plots:
        parts += ["Plots: bars are means over seeds with the seed std as error bars (x axes zoomed, not from 0); "
                  "the loss curves are seed 0's stage-3 answer-token losses.", ""]  # fmt: skip
    for p in plots or []:
        parts += [f"![{Path(p).stem}]({p})", ""]
    return "\n".join(x for x in parts if x is not None) + "\n"


def _time_line(summary: dict[str, Any]) -> str:
    total = sum(sum(a["seconds"]) for a in summary["arms"].values())
    jobs = sum(len(a["seconds"]) for a in summary["arms"].values())
    return f"- compute: {jobs} arm-seed jobs, {total / 60:.1f} min summed over jobs (training + probes; the base's pre-training and data generation not included)"


def _majority_line(summary: dict[str, Any]) -> str:
    maj = summary.get("cls_majority") or {}
    if "test" not in maj:
        return ""
    return (
        f"Classification (dominant object class) chance level: always answering the majority class scores "
        f"{maj['test']:.4f} on the test split" + (f" and {maj['val']:.4f} on val." if "val" in maj else ".")
    )


def _base_line(summary: dict[str, Any]) -> str:
    base = summary["arms"].get("base", {}).get("base") or {}
    if not base:
        return ""
    if "encoder" in base:  # a registered pre-trained encoder, used as it is
        llm = ((summary.get("config") or {}).get("recipe") or {}).get("llm", "tiny-qwen2")
        return (
            f"- base: `{base['encoder']}` (pre-trained, used as it is, no 2D pre-training here); LM: `{llm}`"
        )
    return (f"- base: tiny ViT (d128, 4 layers, patch 8, 64 px) pre-trained 2D-only (class + colour presence): "
            f"loss {base['loss_start']:.3f} -> {base['loss_end']:.3f}, held-out label accuracy "
            f"{base['val_accuracy']:.3f} (majority {base['val_baseline']:.3f})")  # fmt: skip


# --- plots --------------------------------------------------------------------------------------------------


def plot_arms(summary: dict[str, Any], path: Path) -> Path:
    """Depth RMSE, seg mIoU and cls linear of every test arm, mean with the seed std as error bar."""
    names = [n for n in summary["arms"] if not n.endswith("@val")]
    fig = Figure(figsize=(15, 0.35 * len(names) + 2))
    axes = fig.subplots(1, 3)
    for ax, col in zip(axes, ["depth RMSE (m)", "seg mIoU", "cls linear"], strict=True):
        means = [summary["arms"][n]["columns"][col]["mean"] for n in names]
        stds = [summary["arms"][n]["columns"][col]["std"] for n in names]
        ax.barh(
            range(len(names)), means, xerr=stds, color=["grey" if n == "base" else "tab:blue" for n in names]
        )
        ax.set_yticks(range(len(names)), names if ax is axes[0] else [""] * len(names))
        lo, hi = (
            min(m - s for m, s in zip(means, stds, strict=True)),
            max(m + s for m, s in zip(means, stds, strict=True)),
        )
        ax.set_xlim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
        ax.set_title(col + (" (lower is better)" if "RMSE" in col else ""))
        ax.invert_yaxis()
    return save_png(fig, path)


def plot_losses(summary: dict[str, Any], path: Path) -> Path | None:
    """Stage-3 loss curves (seed 0) of the arms trained through the LLM."""
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    drawn = 0
    for name, a in summary["arms"].items():
        d = a["diagnostics"].get(0, a["diagnostics"].get("0", {}))
        if d.get("stage3_loss"):
            steps, losses = zip(*d["stage3_loss"], strict=True)
            style = ("-", "--", ":")[(drawn // 10) % 3]
            ax.plot(steps, losses, label=name, lw=1, ls=style, color=colormaps["tab10"](drawn % 10))
            drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("stage-3 step")
    ax.set_ylabel("answer-token loss (frozen LLM)")
    ax.legend(fontsize=7, ncol=2)
    return save_png(fig, path)


# --- write --------------------------------------------------------------------------------------------------


def json_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` as ``results.json`` keeps it: each column's per-scene values (``per_item``, hundreds of
    numbers a seed; the arm records under ``arms/`` keep them) replaced by ``scene_se_vs_base``, the paired
    standard error over the scenes of its difference from the base of its split."""
    arms = {}
    for name, arm in summary["arms"].items():
        base = summary["arms"].get("val-base@val" if name.endswith("@val") else "base", {}).get("columns", {})
        columns = {}
        for col, stats in arm["columns"].items():
            kept = {k: v for k, v in stats.items() if k != "per_item"}
            if stats.get("per_item") and base.get(col, {}).get("per_item"):
                kept["scene_se_vs_base"] = paired_item_se(base[col], stats)
            columns[col] = kept
        arms[name] = {**arm, "columns": columns}
    return {**summary, "arms": arms}


def write_report(summary: dict[str, Any], out: str | Path, command: str = "", commit: str = "",
                 plots: bool = True, prefix: str = "", md_name: str = "results.md") -> Path:  # fmt: skip
    """``<prefix>results.json``, ``md_name`` (discussion kept) and ``<prefix>*.png`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{prefix}results.json", json_summary(summary))
    names = []
    if plots and summary["arms"]:
        names.append(plot_arms(summary, out / f"{prefix}arms.png").name)
        loss = plot_losses(summary, out / f"{prefix}stage3_loss.png")
        names += [loss.name] if loss else []
    md_path = out / md_name
    text = markdown(summary, command, commit, names)
    if md_path.is_file() and DISCUSSION in md_path.read_text():
        text += "\n" + md_path.read_text()[md_path.read_text().index(DISCUSSION) :]
    atomic_write_text(md_path, text)
    log.info("report -> %s", md_path)
    return md_path
