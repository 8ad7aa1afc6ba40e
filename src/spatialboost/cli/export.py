"""``spatialboost export RUN_DIR --out DIR``: the boosted encoder of a training run, standalone.

The default ``--format hf`` writes a transformers-native folder (``models.hf_export``): config.json with
an ``auto_map``, the self-contained ``modeling_spatialboost.py``, safetensors weights, an image processor
config and a model card; ``AutoModel.from_pretrained(DIR, trust_remote_code=True)`` loads it without
spatialboost, and ``spatialboost.load_encoder(DIR)`` loads it too. ``--format spatialboost`` writes the
project's own layout (``models.export``). The run layout is documented in ``spatialboost.models.export``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spatialboost.io import read_marker
from spatialboost.models.encoder_files import FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", help="training run directory (with encoder/ or checkpoints/step-N/encoder/)"
    )
    parser.add_argument("--out", required=True, help="output directory for the standalone encoder")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="hf",
        help="hf: loads with transformers.AutoModel (and spatialboost); spatialboost: the project's own layout "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--adapter-only",
        action="store_true",
        help="write only Attn+ and the gates, pointing at the base checkpoint (it must be loadable by name)",
    )
    parser.add_argument(
        "--probe-results",
        type=Path,
        help="a `spatialboost probe` results.json (or its folder) of this run's encoder, for the model card "
        "(default: RUN_DIR/probes or RUN_DIR/../probes when they probed these exact weights)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out that spatialboost did not write (only its own files are replaced)",
    )


def run(args: argparse.Namespace) -> int:
    from spatialboost.models.export import export_run  # transformers: not needed for --help

    out = export_run(
        args.run_dir, args.out, args.format, args.adapter_only, args.overwrite, args.probe_results
    )
    print(describe_export(out))
    return 0


def describe_export(out: Path) -> str:
    """What was written (files and sizes) and the two lines that load it."""
    from spatialboost.models.card import load_lines
    from spatialboost.models.export import read_config
    from spatialboost.models.hf_export import HF_FORMAT

    files = (read_marker(out) or {}).get("files", [])
    lines = [f"wrote {out}:"] + [f"  {name}  ({_size(out / name)})" for name in files]
    config = read_config(out)
    if config["format"] == HF_FORMAT:
        remote = config["hf"].get("mode") == "dual"
        lines += [
            "load it with transformers alone:",
            "  from transformers import AutoImageProcessor, AutoModel",
        ]
        lines += [f"  {line}" for line in load_lines(out, remote)]
    lines.append(f'or with spatialboost: spatialboost.load_encoder("{out}")')
    return "\n".join(lines)


def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
