"""Tokens/s of forward+backward, packed vs padded batches, tiny Qwen2 on CPU.

Conversation lengths follow a long-tailed (log-normal) distribution like the spatial CoT data: most
conversations are a few hundred tokens (one image's tokens + a dozen short turns), a few are long
(multi-view, long captions). Padded batches pad every row to the longest in the batch; packed batches
put the same conversations into rows of ``--max-length`` tokens. Packed rows run two ways: ``packed``
(the default, varlen attention: each conversation attends only to itself, ``models.attention``) and
``packed-mask`` (the explicit (R, 1, L, L) block-diagonal mask, which still computes full L x L attention
per row). Throughput counts real (non-pad) tokens only; each batch is timed for every variant in turn
(interleaved) and the median of ``--repeats`` is kept, so the ratios come from the same conditions.

Default width 512 x 2 layers: attention is ~25% of the per-token arithmetic at 1024 tokens, between a
real 7B LLM (~5%) and a 256-wide toy (~40%). The machine is shared: ``--threads 1`` is steadier when
another job holds a core.

    .venv/bin/python benchmarks/bench_packing.py [--batches 3] [--batch-size 16] [--hidden 512 --layers 2]
        [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from spatialboost.data.collate import PackedCollator, PaddedCollator
from spatialboost.models.encoder_base import EncoderOutput, EncoderSpec, VisionEncoder
from spatialboost.models.llm import build_llm
from spatialboost.models.vlm import SpatialVLM

VOCAB, PAD, IMAGE = 512, 0, 5


class NoEncoder(VisionEncoder):
    """Text-only benchmark: the encoder is never called (no image tokens)."""

    spec = EncoderSpec("none", "none", 16, 1, 1, 1, 1)

    def forward_intermediates(self, pixels, layers=None):  # pragma: no cover
        return [EncoderOutput(pixels.new_zeros(1, 16), pixels.new_zeros(1, 1, 16), (1, 1))]


def sample_lengths(rng: np.random.Generator, n: int, max_length: int) -> list[int]:
    lengths = rng.lognormal(mean=np.log(220), sigma=0.6, size=n)
    return [int(x) for x in np.clip(lengths, 48, max_length)]


def make_batch(rng: np.random.Generator, lengths: list[int]) -> list[dict]:
    samples = []
    for i, n in enumerate(lengths):
        ids = torch.from_numpy(rng.integers(10, VOCAB, n))
        labels = ids.clone()
        labels[: n // 3] = -100  # prompt part
        samples.append({"id": str(i), "input_ids": ids, "labels": labels, "pixel_values": None})
    return samples


def time_step(vlm: SpatialVLM, batch: dict) -> float:
    """Seconds of one training forward + backward (the loop's call: loss over the labelled positions)."""
    start = time.perf_counter()
    vlm(**batch, return_logits=False).loss.backward()
    vlm.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    def make_vlm(varlen: bool) -> SpatialVLM:
        torch.manual_seed(0)
        llm = build_llm(
            "tiny-qwen2",
            vocab_size=VOCAB,
            hidden_size=args.hidden,
            intermediate_size=4 * args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.hidden // 64,
            num_key_value_heads=max(1, args.hidden // 128),
        )
        return SpatialVLM(NoEncoder(), llm, IMAGE, varlen_attention=varlen)

    varlen, masked = make_vlm(True), make_vlm(False)  # same weights; padded batches run identically
    variants = {  # name -> (model, collator)
        "padded": (masked, PaddedCollator(PAD)),
        "packed": (varlen, PackedCollator(PAD, args.max_length)),
        "packed-mask": (masked, PackedCollator(PAD, args.max_length)),
    }
    rng = np.random.default_rng(0)
    load = os.getloadavg()[0]
    totals = {name: [0, 0.0, 0] for name in variants}  # tokens, seconds, slots
    for _ in range(args.batches):
        samples = make_batch(rng, sample_lengths(rng, args.batch_size, args.max_length))
        real = sum(len(s["input_ids"]) for s in samples)
        batches = {name: collate(samples) for name, (_, collate) in variants.items()}
        for name, batch in batches.items():
            time_step(variants[name][0], batch)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, batch in batches.items():
                times[name].append(time_step(variants[name][0], batch))
        for name, batch in batches.items():
            totals[name][0] += real
            totals[name][1] += statistics.median(times[name])
            totals[name][2] += batch["input_ids"].numel()
    rates = {}
    for name, (tokens, seconds, slots) in totals.items():
        rates[name] = tokens / seconds
        print(
            f"{name:11s} {rates[name]:9.0f} tokens/s   fill {tokens / slots:.0%}   ({seconds:.2f} s fwd+bwd)"
        )
    print(
        f"packed / padded speed-up: {rates['packed'] / rates['padded']:.2f}x "
        f"(block mask: {rates['packed-mask'] / rates['padded']:.2f}x; torch threads {torch.get_num_threads()}, "
        f"load {load:.2f} -> {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
