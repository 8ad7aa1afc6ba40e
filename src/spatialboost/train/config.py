"""The training config: one typed dataclass tree, loaded YAML -> defaults -> ``key.sub=value`` overrides.

``spatialboost train --config configs/demo.yaml stages.encoder.max_steps=20`` builds a ``TrainConfig``
with ``spatialboost.config.load_config``; the tree is written to ``<run_dir>/config.yaml``, and with every
stage's ``data`` merged (what each stage reads) to ``<run_dir>/config.resolved.yaml``.
Every section is typed, ``model`` included (``models.config.VLMConfig``, with ``model.boost`` a
``BoostConfig`` and ``model.llm_options`` an ``LLMOptions``), so a bad key or value fails when the config
loads, naming the key and the allowed values, before any stage trains.

The three paper stages (paper notes section 4) are three named sections under ``stages`` so that
each one can be overridden from the command line; ``stages.run`` picks which of them run, in order.
A stage's ``data`` is a partial ``data`` section: the keys it names win, the others are the top-level
``data``'s (``stages.encoder.data.datasets=[DIR]`` changes only the datasets stage 3 reads).



============  ======================================  ==============================
stage         trains                                  frozen
============  ======================================  ==============================
``align``     projector                               encoder, LLM
``instruct``  projector + LLM                         encoder
``encoder``   dual-channel Attn+ and gates            LLM, original encoder weights
              (+ projector, ``train_projector``)
============  ======================================  ==============================
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from spatialboost.config import ConfigError, merge_over, to_dict
from spatialboost.models.config import VLMConfig, canonical_mode

STAGE_NAMES = ("align", "instruct", "encoder")
StageName = Literal["align", "instruct", "encoder"]


@dataclass
class DataConfig:
    """Where the conversations come from and how they become batches."""

    datasets: list[str] = field(default_factory=list)  # dataset dirs (each with shards/*.jsonl)
    # share of each epoch's samples drawn from the multi-view pool (samples with > 1 image);
    # None: the datasets' natural proportion
    multi_view_ratio: float | None = None
    max_length: int = 512  # tokens per packed row (and the truncation length of one sample)
    packing: bool = True  # several conversations per row, attention kept within each
    image_size: int | None = None  # None: the encoder's spec.image_size
    num_workers: int = 0  # DataLoader worker processes (image decoding)
    # reference tokens after every point / object a question names, carrying the encoder's feature of
    # that place (data.refs): [] (the paper's format), ["point"], ["region"] or ["point", "region"]
    refs: list[str] = field(default_factory=list)
    image_tokens: bool = True  # the image's patch tokens in the sequence (False: only references read it)
    # stages with a frozen encoder (align, instruct) read encoder features computed once and cached on
    # disk (<run_dir>/features) instead of running the encoder every step
    cache_features: bool = False
    feature_cache_dir: str = ""  # where the cached features live; "" = <run_dir>/features
    # a control, not a recipe: every training sample reads another scene's images (the next sample with as many
    # views), so the text no longer describes the image. What stage 3 gains then came from training at all
    swap_images: bool = False

    def validate(self) -> None:
        if self.multi_view_ratio is not None and not 0.0 <= self.multi_view_ratio <= 1.0:
            raise ConfigError(f"data.multi_view_ratio must be in [0, 1], got {self.multi_view_ratio}")
        if self.max_length < 8:
            raise ConfigError(f"data.max_length must be >= 8, got {self.max_length}")
        bad = sorted(set(self.refs) - {"point", "region"})
        if bad or len(set(self.refs)) != len(self.refs):
            raise ConfigError(f"data.refs: {self.refs}; choose from ['point', 'region'], each once")
        if not self.image_tokens and not self.refs:
            raise ConfigError("data.image_tokens=false needs data.refs: otherwise nothing reads the image")


@dataclass
class StageConfig:
    """One stage's schedule and optimiser. Batch sizes are samples; global = batch * accum * world."""

    max_steps: int = 0  # optimiser steps; 0 -> derived from ``epochs``
    epochs: float = 1.0
    batch_size: int = 8  # samples per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimiser step (per process)
    lr: float = 1e-3
    lr_gates: float | None = None  # dual-channel gates alpha; None -> lr
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.03  # fraction of max_steps spent in linear warmup
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    train_projector: bool = True  # stage ``encoder`` only: also tune g_P (the paper is ambiguous)
    # align / instruct: whether the LLM trains (None: the paper's table -- frozen in align, trained in instruct).
    # A randomly initialised tiny LLM cannot be "aligned to": train it in align too (a reading warm-up)
    train_llm: bool | None = None
    # a partial ``data`` section for this stage: the keys it names replace the top-level ``data``'s, the
    # others are inherited (``TrainConfig.stage_data`` merges them); None or {}: the top-level ``data``
    data: dict[str, Any] | None = None

    def validate(self) -> None:
        if self.max_steps < 0 or (self.max_steps == 0 and self.epochs <= 0):
            raise ConfigError("a stage needs max_steps > 0 or epochs > 0")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("batch_size and grad_accum must be >= 1")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass
class AlignStage(StageConfig):
    lr: float = 1e-3  # LLaVA-1.5's stage-1 lr (the paper does not state it)


@dataclass
class InstructStage(StageConfig):
    lr: float = 2e-5  # LLaVA-1.5's stage-2 lr (not stated in the paper)
    # not in the paper: end stage 2 at the first image-gain measurement (every ``image_gain.every`` steps) whose
    # held-out A/B accuracy with the right images reaches this; 0: train max_steps. Stage 3 passes back what the
    # frozen VLM still gets wrong, so a VLM that reads but not perfectly can teach the encoder more (docs/results.md)
    stop_at_ab_accuracy: float = 0.0

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.stop_at_ab_accuracy <= 1.0:
            raise ConfigError(
                f"stages.instruct.stop_at_ab_accuracy must be in [0, 1], got {self.stop_at_ab_accuracy}"
            )


@dataclass
class EncoderStage(StageConfig):
    lr: float = 2e-5  # "small lr" for Attn+/projector (not stated in the paper)
    lr_gates: float | None = 1e-3  # gates start at 0 with zero gradient; they need a larger lr to move
    # not in the paper: weight of a loss holding the boosted CLS token to the frozen original's on the same
    # images (models.vlm.cls_anchor_loss; one extra no-grad encoder forward a step). 0: the paper's stage 3
    cls_anchor: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.cls_anchor < 0:
            raise ConfigError(f"stages.encoder.cls_anchor must be >= 0, got {self.cls_anchor}")
        if self.train_llm:
            raise ConfigError("stages.encoder.train_llm: the LLM is frozen in stage 3 (that is the method)")


@dataclass
class StagesConfig:
    run: list[StageName] = field(default_factory=lambda: list(STAGE_NAMES))
    align: AlignStage = field(default_factory=AlignStage)
    instruct: InstructStage = field(default_factory=InstructStage)
    encoder: EncoderStage = field(default_factory=EncoderStage)

    def validate(self) -> None:
        if not self.run:
            raise ConfigError("stages.run is empty; name at least one of " + ", ".join(STAGE_NAMES))
        order = [STAGE_NAMES.index(s) for s in self.run]
        if order != sorted(set(order)):
            raise ConfigError(f"stages.run must list stages once each, in order {list(STAGE_NAMES)}")

    def get(self, name: str) -> StageConfig:
        return getattr(self, name)


@dataclass
class ImageGainConfig:
    """Does the VLM read the image? Measured on held-out data at the end of stages 2 and 3.

    Image gain = answer-token loss with other scenes' images minus loss with the right ones (nats per
    answer token; per CoT level too), and accuracy on balanced A/B questions with right vs other images.
    Stage 3 can only pass spatial signal back through the frozen LM if this gain is clearly positive.
    """

    datasets: list[str] = field(default_factory=list)  # held-out dataset dirs; [] = not measured
    max_samples: int = 64  # held-out conversations used
    batch_size: int = 8
    min_gain: float = 0.05  # nats per answer token (all answers); or
    min_choice_gap: float = 0.10  # A/B accuracy with the right minus with other images (beyond 2 s.e. too)
    on_low: Literal["warn", "refuse"] = "warn"  # what stage 3 does when stage 2's gain is below min_gain
    blind: bool = False  # also train stage 2 on the text alone (images zeroed) and report its loss
    every: int = (
        0  # also measure every N steps of stages 2 and 3 (metrics.jsonl / TensorBoard); 0 = at the end
    )

    def validate(self) -> None:
        if self.max_samples < 2 or self.batch_size < 1 or self.every < 0:
            raise ConfigError("image_gain.max_samples must be >= 2, batch_size >= 1 and every >= 0")


@dataclass
class CheckpointConfig:
    every: int = 100  # optimiser steps between checkpoints (and always at the end)
    keep_last: int = 2

    def validate(self) -> None:
        if self.every < 1 or self.keep_last < 1:
            raise ConfigError("checkpoint.every and checkpoint.keep_last must be >= 1")


@dataclass
class LogConfig:
    every: int = 10  # optimiser steps between metric lines
    tensorboard: bool = True
    progress: bool = True  # tqdm bar (rank 0 only)


@dataclass
class TrainConfig:
    run_dir: Path = Path("runs/train")
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPUs, fp32 on CPU
    distributed: Literal["ddp", "fsdp"] = "ddp"  # strategy under torchrun (world size > 1)
    init_from: str | None = None  # a run dir whose finished stages seed the first stage run here
    model: VLMConfig = field(default_factory=VLMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    image_gain: ImageGainConfig = field(default_factory=ImageGainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    # every image feature zeroed: the text-only ("blind") baseline of image_gain.blind
    blind: bool = False

    def stage_data(self, name: str) -> DataConfig:
        """What stage ``name`` reads: its partial ``data`` merged field by field over the top-level ``data``."""
        return merge_over(self.data, self.stages.get(name).data, f"stages.{name}.data.")

    def resolved(self) -> TrainConfig:
        """This config with every stage's ``data`` complete (``config.resolved.yaml``); it loads as it is."""
        out = copy.deepcopy(self)
        for name in STAGE_NAMES:
            out.stages.get(name).data = to_dict(self.stage_data(name))
        return out

    def validate(self) -> None:
        if self.stages.instruct.stop_at_ab_accuracy and not (
            self.image_gain.datasets and self.image_gain.every
        ):
            raise ConfigError(
                "stages.instruct.stop_at_ab_accuracy reads the held-out A/B accuracy: set image_gain.datasets "
                "(held-out data) and image_gain.every (how often to measure it, in steps)"
            )
        if self.stages.encoder.cls_anchor and canonical_mode(self.model.boost.mode) != "dual":
            raise ConfigError(
                f"stages.encoder.cls_anchor needs model.boost.mode=dual (the frozen Attn is its reference); "
                f"got mode {self.model.boost.mode!r}"
            )
        for name in STAGE_NAMES:
            if self.stages.get(name).data:
                data = self.stage_data(name)  # an unknown key or a wrong type names stages.<name>.data.<key>
                try:
                    data.validate()
                except ConfigError as e:
                    raise ConfigError(f"stages.{name}.data, merged over data: {e}") from None
