"""The image gain (train.image_gain): by hand, on a tiny VLM, the blind twin, stage 3's check, new numbers."""

from __future__ import annotations

import json
import math

import pytest
import torch

from refs_fixtures import conversation_dataset
from spatialboost.errors import UserError
from spatialboost.train import image_gain as ig


def test_image_gain_summary_by_hand():
    per_sample = [
        {"levels": {"all": (2.0, 3.0, 2), "pixel": (1.0, 2.0, 1)}, "choice": [(True, False)]},
        {"levels": {"all": (4.0, 4.0, 2)}, "choice": [(True, True), (False, True)]},
    ]
    out = ig.summarize(per_sample)
    assert out["all"]["loss_right"] == 1.5 and out["all"]["loss_other"] == 1.75 and out["all"]["gain"] == 0.25
    assert math.isclose(out["all"]["stderr"], math.sqrt(((0.5 - 0.25) ** 2 + (0 - 0.25) ** 2) / 1 / 2))
    assert out["pixel"]["gain"] == 1.0 and "object" not in out
    assert out["choice"]["acc_right"] == 2 / 3 and out["choice"]["acc_other"] == 2 / 3
    assert ig.partners([1, 2, 1, 2, 3]) == [2, 3, 0, 1, 4]


def test_image_gain_measures_dependence_and_blind_is_zero(engine_data, vlm_and_tok):
    vlm, tok = vlm_and_tok
    ds = conversation_dataset(engine_data["heldout"], vlm, tok)
    seeing = ig.measure_image_gain(vlm, ds, tok, max_samples=4, batch_size=2)
    assert {"all", "pixel", "object", "scene", "caption", "choice"} <= set(seeing)
    assert seeing["all"]["gain"] != 0.0  # a random LM still reacts to the image a little
    vlm.blind = True
    try:
        blind = ig.measure_image_gain(vlm, ds, tok, max_samples=4, batch_size=2)
    finally:
        vlm.blind = False
    assert blind["all"]["gain"] == 0.0 and blind["choice"]["acc_right"] == blind["choice"]["acc_other"]
    assert "within noise" in ig.describe(blind)
    hurt = {"all": {"gain": -0.06, "stderr": 0.014}}  # other images give lower loss than the right ones
    assert "within noise" not in ig.describe(hurt) and "negative beyond noise" in ig.describe(hurt)


def test_held_out_data_is_cut_at_the_lm_context_not_at_the_stages_row_length(engine_data, vlm_and_tok):
    """A stage that packs short rows (max_length 64 here) still scores every held-out answer: the image gain
    tokenizes its held-out set up to the LM's context, so stages compare on the same questions."""
    from spatialboost.train.config import DataConfig

    vlm, tok = vlm_and_tok
    full = conversation_dataset(engine_data["heldout"], vlm, tok)
    assert max(len(s) for s in full.samples) > 64  # the stage's rows would cut these conversations
    held = ig.load_eval_dataset(engine_data["heldout"], tok, vlm, DataConfig(max_length=64, image_size=64,
                                                                          refs=["point", "region"]))  # fmt: skip
    assert ig.eval_max_length(vlm) == vlm.llm.config.max_position_embeddings >= 4096
    assert held.truncated == [] and [len(s) for s in held.samples] == [len(s) for s in full.samples]


def test_stage3_warns_or_refuses_on_a_low_image_gain(tmp_path, caplog):
    from spatialboost.train.config import TrainConfig
    from spatialboost.train.loop import GAIN_FILE, check_stage2_image_gain
    from spatialboost.train.stages import stage_dir

    cfg = TrainConfig(run_dir=tmp_path)
    check_stage2_image_gain(cfg)  # nothing measured: a warning
    assert "not measured" in caplog.text
    path = stage_dir(tmp_path, "instruct") / GAIN_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"all": {"gain": 0.001, "stderr": 0.002}}))
    check_stage2_image_gain(cfg)
    assert "barely reads the image" in caplog.text
    cfg.image_gain.on_low = "refuse"
    with pytest.raises(UserError, match="image_gain.min_gain"):
        check_stage2_image_gain(cfg)
    path.write_text(json.dumps({"all": {"gain": 0.4, "stderr": 0.01}}))
    check_stage2_image_gain(cfg)  # a clear gain passes


def test_stage3_checks_stage_1_where_no_stage_2_ran(tmp_path, caplog):
    """The paper's frozen-LM recipe (stage 1, then stage 3; demo --smollm2): stage 3 reads through the LM as stage 1
    left it, so stage 1's image gain is the one checked, from this run or from ``init_from``."""
    from spatialboost.train.config import TrainConfig
    from spatialboost.train.loop import GAIN_FILE, check_stage2_image_gain, reader_gain
    from spatialboost.train.stages import stage_dir

    first = tmp_path / "first"
    path = stage_dir(first, "align") / GAIN_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"all": {"gain": 0.001, "stderr": 0.002}}))
    cfg = TrainConfig(run_dir=tmp_path / "second", init_from=str(first))
    assert reader_gain(cfg.run_dir, cfg.init_from)[0] == "align"
    cfg.image_gain.on_low = "refuse"
    with pytest.raises(UserError, match="stage 1's VLM barely reads.*Train stage 1 longer"):
        check_stage2_image_gain(cfg)
    stage2 = stage_dir(first, "instruct") / GAIN_FILE  # where stage 2 ran, its gain wins
    stage2.parent.mkdir(parents=True)
    stage2.write_text(json.dumps({"all": {"gain": 0.4, "stderr": 0.01}}))
    assert reader_gain(cfg.run_dir, cfg.init_from)[0] == "instruct"
    check_stage2_image_gain(cfg)


def test_new_number_mask_marks_only_numbers_the_text_cannot_supply(vlm_and_tok):
    from spatialboost.data.conversation import tokenize_conversation

    _, tok = vlm_and_tok
    record = {"id": "x", "image": ["a.png"], "conversations": [
        {"from": "human", "value": "<image>\nWhat is the depth at (34, 26)?"},
        {"from": "gpt", "value": "The depth at (34, 26) is 2.94 m."},
        {"from": "human", "value": "And at (10, 12)?"},
        {"from": "gpt", "value": "Also 2.94 m, and (10, 12) is 1.5 m."},
    ]}  # fmt: skip
    sample = tokenize_conversation(record, tok)
    ids, turns = torch.tensor(sample.input_ids), torch.tensor(sample.turns)
    labelled = torch.tensor(sample.labels) != ig.LM_IGNORE_INDEX
    mask = ig.new_number_mask(ids, turns, labelled, ig.TokenText(tok))
    text = ig.TokenText(tok)
    marked = ["".join(text(int(t)) for t in ids[turns == a][mask[turns == a]]) for a in (0, 1)]
    # the first answer's new value only; the second answer repeats 2.94 (seen before) and states 1.5 new
    assert marked == ["2.94", "1.5"]
    assert not (mask & ~labelled).any()


def test_token_losses_keep_only_the_asked_logits_and_match_the_full_loss(engine_data, vlm_and_tok):
    """Row by row, K columns of the vocabulary: the same numbers as the full (R, L, V) computation, without
    holding it (a 49k-vocabulary LM's two full float copies took the pass past 24 GB)."""
    from spatialboost.data.collate import PaddedCollator

    vlm, tok = vlm_and_tok
    ds = conversation_dataset(engine_data["heldout"], vlm, tok)
    batch = PaddedCollator(tok.pad_token_id or 0)([ds[0], ds[1]])
    keep = [5, 17, 3]
    loss, kept = ig.token_losses(vlm, batch, keep)
    with torch.no_grad():
        full = vlm(**{k: v for k, v in batch.items() if k != "ids"}).logits[:, :-1].float()
    want = torch.nn.functional.cross_entropy(full.transpose(1, 2), batch["labels"][:, 1:], ignore_index=-100,
                                             reduction="none")  # fmt: skip
    assert kept.shape == (*full.shape[:2], 3) and torch.equal(kept, full[..., keep])
    torch.testing.assert_close(loss, want)


def test_stage_2_stops_at_its_ab_accuracy_target_and_a_rerun_keeps_the_stop(engine_data, tmp_path):
    """stages.instruct.stop_at_ab_accuracy: stage 2 ends at the first held-out check that reaches the target, its
    checkpoint there is final (stage 3 starts from it), and re-running the command trains nothing more."""
    from spatialboost.cli import main
    from spatialboost.train import checkpoint as ckpt
    from spatialboost.train.stages import finished_output, stage_dir
    from train_fixtures import TRAIN_BARE, tiny_overrides

    run = tmp_path / "run"
    args = [*TRAIN_BARE, *tiny_overrides(run, engine_data["train"], steps=6, every=10, batch=2),
            "data.refs=[point,region]", "data.max_length=2048", f"image_gain.datasets=[{engine_data['heldout']}]",
            "image_gain.max_samples=4", "image_gain.every=2"]  # fmt: skip
    torch.set_num_threads(1)
    assert main([*args, "stages.instruct.stop_at_ab_accuracy=0.01"]) == 0  # any accuracy above 0 stops it
    last = finished_output(run, "instruct")
    state = ckpt.read_state(last)
    assert state["step"] == 2 and state["total_steps"] == 6 and state["done"]
    assert state["stopped"] == {"step": 2, "stop_at_ab_accuracy": 0.01}
    gain = json.loads((stage_dir(run, "instruct") / "image_gain.json").read_text())
    assert gain["step"] == 2 and gain["choice"]["acc_right"] >= 0.01
    assert ckpt.read_state(finished_output(run, "encoder"))["step"] == 6  # stage 3 ran whole, from step 2
    weights = (last / ckpt.WEIGHTS).read_bytes()
    assert main([*args, "stages.instruct.stop_at_ab_accuracy=0.01"]) == 0
    assert finished_output(run, "instruct") == last and (last / ckpt.WEIGHTS).read_bytes() == weights
    # a target no check reaches trains the whole stage (a fresh run dir: the config differs)
    full = tmp_path / "full"
    assert main([*args, f"run_dir={full}", "stages.instruct.stop_at_ab_accuracy=1.0",
                 "stages.run=[align,instruct]"]) == 0  # fmt: skip
    accuracy = json.loads((stage_dir(full, "instruct") / "image_gain.json").read_text())["choice"][
        "acc_right"
    ]
    assert ckpt.read_state(finished_output(full, "instruct"))["step"] == 6 or accuracy == 1.0


def test_stop_at_ab_accuracy_needs_held_out_checks():
    from spatialboost.config import ConfigError, from_dict, validate_tree
    from spatialboost.train.config import TrainConfig

    def check(tree: dict) -> TrainConfig:
        cfg = from_dict(TrainConfig, tree)
        validate_tree(cfg)
        return cfg

    with pytest.raises(ConfigError, match="image_gain.every"):
        check({"stages": {"instruct": {"stop_at_ab_accuracy": 0.7}}})
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        check(
            {
                "stages": {"instruct": {"stop_at_ab_accuracy": 70}},
                "image_gain": {"datasets": ["x"], "every": 5},
            }
        )
    ok = check(
        {"stages": {"instruct": {"stop_at_ab_accuracy": 0.7}}, "image_gain": {"datasets": ["x"], "every": 5}}
    )
    assert ok.stages.instruct.stop_at_ab_accuracy == 0.7


def test_reads_image_by_the_gain_or_a_clear_ab_gap():
    from spatialboost.train.config import ImageGainConfig
    from spatialboost.train.loop import reads_image

    gcfg = ImageGainConfig()  # min_gain 0.05 nats/token, or an A/B gap of 10 points beyond 2 s.e.
    flat = {"all": {"gain": 0.0, "stderr": 0.001}}
    assert not reads_image(flat, gcfg) and reads_image({"all": {"gain": 0.06, "stderr": 0.01}}, gcfg)
    assert reads_image({**flat, "choice": {"acc_right": 0.8, "acc_other": 0.6, "stderr": 0.04}}, gcfg)
    assert not reads_image({**flat, "choice": {"acc_right": 0.8, "acc_other": 0.6, "stderr": 0.11}}, gcfg)
    assert not reads_image({**flat, "choice": {"acc_right": 0.58, "acc_other": 0.56, "stderr": 0.01}}, gcfg)


def test_a_reading_warm_up_that_ends_without_reading_says_so_at_once(engine_data, tmp_path, caplog):
    """Stage 1 with the LM trained (the reading warm-up) warns when it ends and its LM ignores the image: the
    default recipe's 400 steps left 2 of 3 CLIP-B/16 seeds there, and stage 2 only warned later."""
    from spatialboost.cli import main
    from train_fixtures import TRAIN_BARE, tiny_overrides

    run = tmp_path / "run"
    args = [*TRAIN_BARE, *tiny_overrides(run, engine_data["train"], steps=2, every=10, batch=2),
            "data.refs=[point,region]", "data.max_length=2048", f"image_gain.datasets=[{engine_data['heldout']}]",
            "image_gain.max_samples=4", "stages.run=[align]", "stages.align.train_llm=true"]  # fmt: skip
    torch.set_num_threads(1)
    with caplog.at_level("WARNING", logger="spatialboost.train.loop"):
        assert main([*args, "image_gain.min_gain=1e9", "image_gain.min_choice_gap=1.0"]) == 0
    assert "reading warm-up ended at step 2 with an LM that does not read the image" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="spatialboost.train.loop"):
        assert main([*args, f"run_dir={tmp_path / 'run2'}", "image_gain.min_gain=-1e9"]) == 0
    assert "reading warm-up" not in caplog.text
