"""Load hf exports the way someone without spatialboost would: transformers alone (run by test_hf_export).

Usage: python -I hf_isolated_load.py JOBS.json. Each job: {"folder", "inputs", "out", "remote"}; ``inputs``
(safetensors) holds "pixels" (B, 3, S, S) and "image" (H, W, 3) uint8. Writes to ``out``: "cls"/"patch"
(``forward_features``, remote code) or "hidden" (``last_hidden_state``, plain checkpoints) and "processed"
(``AutoImageProcessor`` applied to "image"). Prints one "RESULT {json}" line per job.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# a cleaned sys.path: the editable install's source folder goes, so spatialboost cannot be imported
sys.path = [p for p in sys.path if not (Path(p or ".") / "spatialboost").exists()]
try:
    import spatialboost  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("spatialboost is importable in the isolated loader")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoImageProcessor, AutoModel  # noqa: E402


def run(job: dict) -> dict:
    inputs = load_file(job["inputs"])
    refused = None
    if job["remote"]:
        try:
            AutoModel.from_pretrained(job["folder"])  # without trust_remote_code: must refuse, not guess
        except ValueError as e:
            refused = "trust_remote_code" in str(e)
    model = AutoModel.from_pretrained(job["folder"], trust_remote_code=True).eval()
    out = {}
    with torch.no_grad():
        if job["remote"]:
            cls, patch = model.forward_features(inputs["pixels"])
            out = {"cls": cls.contiguous(), "patch": patch.contiguous()}
        else:
            out = {"hidden": model(inputs["pixels"]).last_hidden_state.contiguous()}
    processor = AutoImageProcessor.from_pretrained(job["folder"])
    out["processed"] = processor(images=[inputs["image"].numpy()], return_tensors="pt")["pixel_values"]
    save_file(out, job["out"])
    return {"folder": job["folder"], "class": type(model).__name__, "module": type(model).__module__,
            "refused_without_trust": refused, "spatialboost_loaded": "spatialboost" in sys.modules}  # fmt: skip


if __name__ == "__main__":
    for job in json.loads(Path(sys.argv[1]).read_text()):
        print("RESULT " + json.dumps(run(job)), flush=True)
