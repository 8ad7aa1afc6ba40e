"""Encoder registry and contract: every tiny family builds offline and agrees with its HF model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spatialboost.errors import UserError
from spatialboost.models import modeling_spatialboost
from spatialboost.models.encoder_base import VisionEncoder
from spatialboost.models.encoders import create_encoder, list_encoders
from spatialboost.models.export import load_encoder, save_encoder
from spatialboost.models.hf_encoders import FAMILIES as HF_FAMILIES
from spatialboost.models.preprocess import preprocess_images
from spatialboost.registry import UnknownNameError

FAMILIES = list_encoders(tiny_only=True)


def pixels(encoder, h: int | None = None, w: int | None = None, batch: int = 2) -> torch.Tensor:
    s = encoder.spec.image_size
    return torch.randn(batch, 3, h or s, w or s, generator=torch.Generator().manual_seed(0))


def test_registry_lists_every_family_and_presets():
    names = list_encoders()
    for required in (
        "tiny-vit",
        "tiny-dinov2",
        "tiny-dinov2-reg",
        "tiny-dinov3",
        "tiny-siglip2",
        "tiny-clip",
    ):
        assert required in names
    assert {"vit-s14", "vit-b16", "dinov2-large"} <= set(names)
    families = {create_encoder(n).spec.family for n in FAMILIES}
    assert families == set(HF_FAMILIES)  # every family has its tiny config (and tiny-vit is a dinov2)


@pytest.mark.parametrize("family", sorted(HF_FAMILIES))
def test_every_family_has_a_complete_descriptor(family):
    """What the card, the registry and the hf export read about a family, all on its class (``FamilyInfo``)."""
    cls = HF_FAMILIES[family]
    assert "info" in vars(cls), f"{family}: declare its own FamilyInfo (not inherit its parent's)"
    info = cls.info
    assert info.display_name and info.hub and info.licenses, f"{family}: empty FamilyInfo field"
    assert all(v.get("license") for v in info.licenses.values())
    assert all(hub.count("/") == 1 for hub in info.hub.values())
    name, config = info.tiny
    assert name.startswith("tiny-") and create_encoder(name, seed=0).spec.family == family and config
    assert len(cls.default_mean) == len(cls.default_std) == 3
    config_name, model_name = cls.remote_classes()  # built by modeling_spatialboost's table
    remote_model = getattr(modeling_spatialboost, model_name)
    assert issubclass(remote_model, cls.model_class) and remote_model.config_class.__name__ == config_name
    assert remote_model.config_class.model_type == f"spatialboost_{cls.config_class.model_type}"


@pytest.mark.parametrize("name", FAMILIES)
def test_shapes_grid_and_intermediates(name):
    enc = create_encoder(name, seed=0)
    spec = enc.spec
    assert isinstance(enc, VisionEncoder) and not enc.training
    x = pixels(enc)
    with torch.no_grad():
        out = enc.forward_features(x)
        g = spec.image_size // spec.patch_size
        assert out.grid == (g, g)
        assert out.cls.shape == (2, spec.embed_dim)
        assert out.patch.shape == (2, g * g, spec.embed_dim)
        inter = enc.forward_intermediates(x, [0, 1, -1])
    assert len(inter) == 3
    torch.testing.assert_close(inter[-1].patch, out.patch, rtol=0, atol=0)
    torch.testing.assert_close(inter[-1].cls, out.cls, rtol=0, atol=0)
    assert not torch.allclose(inter[0].patch, inter[1].patch)
    with pytest.raises(IndexError):
        enc.forward_intermediates(x, [spec.num_layers])


@pytest.mark.parametrize("name", FAMILIES)
def test_matches_the_hf_model(name):
    """The wrapper's own block loop reproduces the HF forward (last layer, after the final norm)."""
    enc = create_encoder(name, seed=0)
    x = pixels(enc)
    with torch.no_grad():
        out = enc.forward_features(x)
        if enc.spec.family == "siglip2":
            p = enc.spec.patch_size
            b, c, h, w = x.shape
            patches = (
                x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, p * p * c)
            )
            shapes = torch.tensor([[h // p, w // p]] * b)
            ref = enc.model(patches, torch.ones(b, patches.shape[1], dtype=torch.long), shapes)
            torch.testing.assert_close(out.patch, ref.last_hidden_state)
            torch.testing.assert_close(out.cls, ref.pooler_output)
        elif enc.spec.family == "clip":
            ref = enc.model(x)
            torch.testing.assert_close(out.cls, ref.pooler_output)
        else:
            ref = enc.model(x)
            torch.testing.assert_close(out.patch, ref.last_hidden_state[:, enc.spec.num_prefix_tokens :])
            torch.testing.assert_close(out.cls, ref.pooler_output)


@pytest.mark.parametrize("name", FAMILIES)
def test_other_input_sizes(name):
    enc = create_encoder(name, seed=0)
    p = enc.spec.patch_size
    with torch.no_grad():
        out = enc(pixels(enc, h=6 * p, w=10 * p))
    assert out.grid == (6, 10) and out.patch.shape[1] == 60
    with pytest.raises(ValueError, match="multiple of the patch"):
        enc(pixels(enc, h=6 * p + 1, w=10 * p))


def test_seed_and_config_overrides():
    a, b, c = (create_encoder("tiny-dinov2", seed=s) for s in (0, 0, 1))
    wa, wb, wc = (e.model.embeddings.patch_embeddings.projection.weight for e in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert create_encoder("tiny-dinov2", num_hidden_layers=3).spec.num_layers == 3


def test_create_from_instance_shares_weights():
    enc = create_encoder("tiny-clip", seed=0)
    wrapped = create_encoder(enc.model)
    assert wrapped.spec.family == "clip"
    assert wrapped.model is enc.model
    assert create_encoder(enc) is enc
    with pytest.raises(TypeError, match="supported model classes"):
        create_encoder(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("name", ["tiny-dinov3", "tiny-siglip2"])
def test_create_from_save_pretrained_dir(tmp_path, name):
    enc = create_encoder(name, seed=0)
    enc.model.save_pretrained(tmp_path / "ckpt")
    loaded = create_encoder(str(tmp_path / "ckpt"))
    assert loaded.spec.family == enc.spec.family
    assert loaded.spec.extra["source"]["kind"] == "path"
    x = pixels(enc)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).patch, enc(x).patch, rtol=0, atol=0)


def test_preprocessor_config_is_read_or_refused_never_silently_replaced(tmp_path):
    """A checkpoint's own mean/std are used; a broken preprocessor_config.json is an error naming the file,
    not a silent fall-back to the family's defaults; a missing one means the family's defaults."""
    enc = create_encoder("tiny-dinov2", seed=0)
    enc.model.save_pretrained(tmp_path / "ckpt")
    default = create_encoder(str(tmp_path / "ckpt")).spec
    pre = tmp_path / "ckpt" / "preprocessor_config.json"
    pre.write_text(
        '{"image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.5, 0.5], "crop_size": {"height": 40}, "resample": 2}'
    )
    loaded = create_encoder(str(tmp_path / "ckpt"))
    spec = loaded.spec
    assert (
        list(spec.mean) == [0.1, 0.2, 0.3] and spec.image_size == 40 and list(default.mean) != [0.1, 0.2, 0.3]
    )
    assert spec.interpolation == "bilinear" and default.interpolation == "bicubic"  # PIL's 2 -> bilinear
    save_encoder(loaded, tmp_path / "saved")  # the spec's preprocessing travels with the weights
    assert load_encoder(tmp_path / "saved").spec.interpolation == "bilinear"
    pre.write_text('{"image_mean": [0.1, ')
    with pytest.raises(UserError, match="preprocessor_config.json"):
        create_encoder(str(tmp_path / "ckpt"))


def test_a_folder_that_is_no_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        create_encoder(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="config"):
        create_encoder(str(tmp_path))


def test_unknown_name_lists_known_names():
    with pytest.raises(UnknownNameError, match="tiny-vit") as info:
        create_encoder("no-such-encoder")
    assert "tiny-dinov3" in str(info.value)


@pytest.mark.parametrize(
    "name", ["timm/vit_small_patch14_dinov2.lvd142m", "open_clip:ViT-B-32", "hf-hub:timm/x"]
)
def test_timm_and_open_clip_names_say_why_they_are_unsupported(name):
    """No timm / open_clip wrappers (their torchvision would replace the pinned CPU torch): the error says so and
    names the transformers equivalents, before anything is looked up on a hub."""
    with pytest.raises(UnknownNameError, match="not supported") as info:
        create_encoder(name)
    assert "dinov2-small" in str(info.value) and "transformers" in str(info.value)


def test_preprocess_shapes_and_normalisation():
    enc = create_encoder("tiny-vit")
    spec = enc.spec
    grey = np.full((50, 90, 3), 128, np.uint8)
    x = preprocess_images([grey, Image.fromarray(grey)], spec)
    assert x.shape == (2, 3, spec.image_size, spec.image_size) and x.dtype == torch.float32
    expected = (128 / 255 - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    torch.testing.assert_close(x[:, :, 10, 10], expected.expand(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x[0], x[1])
    assert preprocess_images([grey], spec, size=61).shape[-1] == 56  # rounded down to a multiple of 8


def test_preprocess_center_crops_the_long_side():
    spec = create_encoder("tiny-dinov2").spec
    img = np.zeros((32, 96, 3), np.uint8)
    img[:, 32:64] = 255  # a white centre third: it is all that survives the crop
    x = preprocess_images([img], spec)
    white = (1.0 - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    torch.testing.assert_close(x[0, :, 16, 16], white, atol=1e-4, rtol=0)
