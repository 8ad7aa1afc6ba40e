"""hf export sizes and times: full folder vs adapter-only, per encoder preset (random weights, no download).

    .venv/bin/python benchmarks/bench_export.py [--encoders vit-s14,vit-b16] [--layers all|last4] [--repeats 3]

For each preset: the base is written with ``save_pretrained`` (a transformers checkpoint the adapter can
point at), boosted with the dual-channel adapter (channel gate), then exported twice with
``save_hf_encoder``. Prints one JSON object: file sizes in MB (fp32), median export seconds over the
repeats, and the time ``AutoModel.from_pretrained(..., trust_remote_code=True)`` takes to load each folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from spatialboost.models.dual_channel import boost_encoder
from spatialboost.models.encoders import create_encoder
from spatialboost.models.hf_export import ADAPTER_WEIGHTS, WEIGHTS, save_hf_encoder


def bench(name: str, layers: str, repeats: int, root: Path) -> dict:
    create_encoder(name, seed=0).model.save_pretrained(root / f"{name}-base")
    encoder = create_encoder(str(root / f"{name}-base"))
    n = encoder.spec.num_layers
    boost_encoder(encoder, layers=None if layers == "all" else list(range(n - 4, n)))
    result = {"blocks_boosted": n if layers == "all" else 4}
    for kind, adapter_only, file in (("full", False, WEIGHTS), ("adapter_only", True, ADAPTER_WEIGHTS)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            save_hf_encoder(encoder, root / f"{name}-{kind}", adapter_only=adapter_only, overwrite=True)
            times.append(time.perf_counter() - t0)
        result[f"{kind}_mb"] = round((root / f"{name}-{kind}" / file).stat().st_size / 1e6, 2)
        result[f"{kind}_export_s_median"] = round(statistics.median(times), 3)
        result[f"{kind}_load_s"] = round(_load_seconds(root / f"{name}-{kind}"), 3)
    return result


def _load_seconds(folder: Path) -> float:
    from transformers import AutoModel

    t0 = time.perf_counter()
    AutoModel.from_pretrained(folder, trust_remote_code=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="vit-s14,vit-b16")
    parser.add_argument("--layers", choices=["all", "last4"], default="all")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = {name: bench(name, args.layers, args.repeats, Path(tmp)) for name in args.encoders.split(",")}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
