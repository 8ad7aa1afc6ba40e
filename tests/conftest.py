"""Suite-wide settings and the fixtures several files share. OpenMP's spin-waiting threads stall every op when another process holds a core
(see spatialboost/cli/__init__.py); set the passive policy before any test imports torch."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

# --- a small engine dataset with A/B turns and a tiny VLM with reference tokens (test_data_refs,
# test_train_image_gain, test_models_llm); session-scoped, so built once however many files use them ------


@pytest.fixture(scope="session")
def engine_data(tmp_path_factory):
    """6 synthetic scenes (64 px, some multi-view) with A/B and readout turns, plus a held-out set."""
    from spatialboost.datagen.dataset.writer import WriteSpec, write_dataset
    from spatialboost.datagen.questions.conversations import ConversationConfig
    from spatialboost.datagen.scenes.synthetic import SyntheticConfig
    from spatialboost.datagen.sources import GenerateConfig, SyntheticSource

    root = tmp_path_factory.mktemp("refs")
    out = {}
    for name, n, seed in (("train", 6, 0), ("heldout", 4, 1)):
        conv = ConversationConfig(turns={"pixel": 2, "object": 2, "scene": 1},
                                  extra_turns={"choice_closer_point": 1, "choice_closer_object": 1})  # fmt: skip
        cfg = GenerateConfig(scenes=n, seed=seed, multiview_share=0.5, max_views=2, shard_size=8,
                             synthetic=SyntheticConfig(image_size=64), conversation=conv)  # fmt: skip
        write_dataset(SyntheticSource(cfg), WriteSpec(root / name, n, seed, cfg.shard_size, conv))
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def vlm_and_tok(engine_data):
    import torch

    from spatialboost.data.tokenizer import corpus_from_records, train_tokenizer
    from spatialboost.dataset_format import read_records
    from spatialboost.models.encoders import create_encoder
    from spatialboost.models.llm import build_llm, ensure_image_token, ensure_ref_tokens, ref_token_ids
    from spatialboost.models.vlm import SpatialVLM

    tok = train_tokenizer(corpus_from_records(read_records(engine_data["train"])), vocab_size=400)
    ensure_image_token(tok)
    ensure_ref_tokens(tok)
    torch.manual_seed(0)
    enc = create_encoder("tiny-vit", seed=0)
    llm = build_llm("tiny-qwen2", tok)
    vlm = SpatialVLM(enc, llm, ensure_image_token(tok, llm), ref_token_ids=ref_token_ids(tok)).eval()
    return vlm, tok
