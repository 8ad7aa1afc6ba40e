"""A small offline BPE tokenizer for the tiny demo/test LLM, trained on the generated corpus.

Byte-level BPE (no unknown tokens) with every digit split into its own token, so "2.31 m" and
"(118, 40)" tokenize the same way whatever the number. Special tokens: ``<image>`` (one token per
image placeholder), a pad, bos/eos, and the ChatML role markers ``<|im_start|>``/``<|im_end|>`` used
by the chat template below (the Qwen2 format, so the tiny LLM and a real Qwen2 see the same layout).

Saved as ``tokenizer.json`` (+ ``tokenizer_config.json`` and the chat template) with
``save_pretrained``; loaded back with ``load_tokenizer(dir)`` or ``AutoTokenizer.from_pretrained(dir)``
as a ``PreTrainedTokenizerFast``. Training is deterministic: same texts -> same vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from spatialboost.constants import IMAGE_TOKEN

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IM_START, IM_END, IMAGE_TOKEN]

# ChatML, as Qwen2 writes it. An answer ends with <|im_end|>, which is the token generation stops on.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{%- endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (digits split individually) on ``texts``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """A ``tokenizers.Tokenizer`` with our special tokens -> a transformers fast tokenizer with chat template."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> Path:
    """Write tokenizer.json, tokenizer_config.json and the chat template into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by ``save_tokenizer`` (a directory, or a bare tokenizer.json file)."""
    path = Path(path)
    if path.is_file():
        return wrap_tokenizer(Tokenizer.from_file(str(path)))
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"{path}: no tokenizer.json (train one with train_tokenizer + save_tokenizer)"
        )
    fast = PreTrainedTokenizerFast.from_pretrained(str(path))
    if not fast.chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def corpus_from_records(records: Iterable[dict]) -> list[str]:
    """Every turn's text of LLaVA conversation records (the tokenizer's training corpus)."""
    return [turn["value"] for record in records for turn in record.get("conversations", [])]
