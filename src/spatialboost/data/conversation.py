"""A LLaVA conversation record -> token ids and labels (loss on every assistant answer).

Record format (written by the data engine)::

    {"id": "...", "image": "img/0001.png" | ["v0.png", "v1.png"],
     "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}

One ``<image>`` placeholder per image, in the order of ``image``. The whole multi-turn conversation is
one sequence (one forward pass); labels are the token ids on every assistant answer *and* the token
that ends it, ``LM_IGNORE_INDEX`` (-100) everywhere else (system prompt, user turns, role headers, images).

Formats:

- **Chat template** (the tokenizer has one, e.g. ours or Qwen2's ChatML): the conversation is rendered with
  ``apply_chat_template``; the labelled span of answer k is the text that rendering ``messages[:k+1]``
  adds after rendering ``messages[:k]`` with ``add_generation_prompt=True`` (right-stripped of whitespace).
  A template that is not prefix-consistent (it rewrites earlier turns) raises instead of mislabelling.
- **Fallback** (no template; Vicuna-v1 / LLaVA-1.5 style)::

      <bos>SYSTEM USER: {q1} ASSISTANT: {a1}<eos>USER: {q2} ASSISTANT: {a2}<eos>

  where " {a}<eos>" is labelled.

Each text segment is tokenized on its own (``add_special_tokens=False``) and the ids concatenated, so
label boundaries are exact; prompts for generation are built the same way (``prompt_ids``).
Each ``<image>`` token is then expanded to ``num_image_tokens`` copies (HF Llava style), so sequence
lengths, truncation and packing all see the real length and the model fills those slots with the
projected patch tokens of that image.
"""

from __future__ import annotations

from dataclasses import dataclass

from spatialboost.constants import IMAGE_TOKEN, LM_IGNORE_INDEX
from spatialboost.dataset_format import record_images
from spatialboost.errors import EmptyLabelsError

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
FALLBACK_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


class TruncatedError(EmptyLabelsError):
    """Truncation to ``max_length`` would cut every answer of a sample."""


@dataclass
class TokenizedConversation:
    id: str
    input_ids: list[int]  # image placeholders expanded to num_image_tokens copies each
    labels: list[int]  # LM_IGNORE_INDEX outside answers
    num_images: int  # images whose tokens are in input_ids (after truncation)
    turns: list[int] | None = None  # per token: the answer (0-based turn) a label belongs to, -1 elsewhere
    full_length: int | None = None  # the length before truncation to max_length (None: not truncated)

    def __len__(self) -> int:
        return len(self.input_ids)


def record_messages(record: dict) -> list[dict[str, str]]:
    """LLaVA ``conversations`` -> chat messages ``[{"role", "content"}]``, validated."""
    sample_id = record.get("id", "?")
    messages = []
    for turn in record.get("conversations", []):
        role = ROLES.get(turn.get("from"))
        if role is None:
            raise ValueError(
                f"sample {sample_id}: unknown speaker {turn.get('from')!r}; known: {sorted(ROLES)}"
            )
        messages.append({"role": role, "content": str(turn["value"])})
    if not any(m["role"] == "assistant" for m in messages):
        raise EmptyLabelsError(f"sample {sample_id}: no assistant ('gpt') turn to learn from")
    n_placeholders = sum(m["content"].count(IMAGE_TOKEN) for m in messages)
    n_images = len(record_images(record))
    if n_placeholders != n_images:
        raise ValueError(f"sample {sample_id}: {n_placeholders} <image> placeholders for {n_images} images")
    return messages


def template_segments(
    messages: list[dict[str, str]], tokenizer, generation_prompt: bool = False
) -> list[tuple[str, bool]]:
    """(text, is_answer) pieces of the chat-template rendering, by prefix differences."""

    def render(msgs: list[dict[str, str]], gen: bool) -> str:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    segments: list[tuple[str, bool]] = []
    done = ""
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt, full = render(messages[:k], True), render(messages[: k + 1], False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError(
                "the tokenizer's chat template is not prefix-consistent (it rewrites earlier turns); "
                "remove its chat_template to use the fallback format"
            )
        answer = full[len(prompt) :]
        body = answer.rstrip()
        segments += [(prompt[len(done) :], False), (body, True), (answer[len(body) :], False)]
        done = full
    rest = render(messages, generation_prompt)[len(done) :]
    segments.append((rest, False))
    return [(text, is_answer) for text, is_answer in segments if text]


def fallback_segments(messages: list[dict[str, str]], tokenizer) -> list[tuple[str, bool]]:
    """(text, is_answer) pieces of the Vicuna-v1 format used when the tokenizer has no chat template."""
    bos = tokenizer.bos_token or ""
    eos = tokenizer.eos_token or ""
    system = next((m["content"] for m in messages if m["role"] == "system"), FALLBACK_SYSTEM)
    segments: list[tuple[str, bool]] = [(bos + system, False)]
    for message in messages:
        if message["role"] == "user":
            segments.append((f" USER: {message['content']} ASSISTANT:", False))
        elif message["role"] == "assistant":
            segments.append((f" {message['content']}{eos}", True))
    return segments


def conversation_segments(
    messages: list[dict[str, str]], tokenizer, generation_prompt: bool = False
) -> list[tuple[str, bool]]:
    """The template format when the tokenizer has a chat template, else the fallback format."""
    if getattr(tokenizer, "chat_template", None):
        return template_segments(messages, tokenizer, generation_prompt)
    return fallback_segments(messages, tokenizer)  # ends with " ASSISTANT:" after a user turn


def tokenize_conversation(
    record: dict,
    tokenizer,
    num_image_tokens: int = 1,
    max_length: int | None = None,
) -> TokenizedConversation:
    """Token ids and labels of one record; raises ``EmptyLabelsError`` if no answer token survives."""
    sample_id = str(record.get("id", "?"))
    messages = record_messages(record)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    ids: list[int] = []
    labels: list[int] = []
    turns: list[int] = []
    answer = -1
    for text, is_answer in conversation_segments(messages, tokenizer):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if is_answer else [LM_IGNORE_INDEX] * len(piece)
        answer += is_answer
        turns += [answer if is_answer else -1] * len(piece)
    n_images = len(record_images(record))
    if ids.count(image_id) != n_images or (n_images and image_id in labels):
        raise ValueError(
            f"sample {sample_id}: <image> is not one token of this tokenizer (use ensure_image_token)"
        )
    expanded, labels = expand_image_tokens(ids, labels, image_id, num_image_tokens)
    turns = expand_image_tokens(ids, turns, image_id, num_image_tokens)[1]
    sample = TokenizedConversation(sample_id, expanded, labels, n_images, turns)
    if max_length is not None and len(ids) > max_length:
        sample = truncate(sample, max_length, image_id, num_image_tokens)
    if all(label == LM_IGNORE_INDEX for label in sample.labels[1:]):
        raise EmptyLabelsError(f"sample {sample_id}: empty label mask (tokenization mismatch?)")
    return sample


def expand_image_tokens(
    ids: list[int], labels: list[int], image_id: int, n: int
) -> tuple[list[int], list[int]]:
    """Repeat every image token ``n`` times (labels stay LM_IGNORE_INDEX there)."""
    out_ids: list[int] = []
    out_labels: list[int] = []
    for token, label in zip(ids, labels, strict=True):
        reps = n if token == image_id else 1
        out_ids += [token] * reps
        out_labels += [label] * reps
    return out_ids, out_labels


def truncate(sample: TokenizedConversation, max_length: int, image_id: int, n: int) -> TokenizedConversation:
    """Cut to ``max_length`` tokens, never through an image (a cut image is dropped whole)."""
    cut = max_length
    while cut > 0 and sample.input_ids[cut - 1] == image_id and sample.input_ids[cut] == image_id:
        cut -= 1  # inside an image block: move the cut to its start
    ids, labels = sample.input_ids[:cut], sample.labels[:cut]
    turns = sample.turns[:cut] if sample.turns is not None else None
    if all(label == LM_IGNORE_INDEX for label in labels[1:]):
        first = next(i for i, label in enumerate(sample.labels) if label != LM_IGNORE_INDEX)
        raise TruncatedError(
            f"sample {sample.id}: max_length={max_length} cuts every answer (the first answer starts at "
            f"token {first} of {len(sample.input_ids)}); raise max_length or shorten the sample"
        )
    n_images = ids.count(image_id) // n if n else sample.num_images
    return TokenizedConversation(sample.id, ids, labels, n_images, turns, full_length=len(sample.input_ids))


def prompt_ids(messages: list[dict[str, str]], tokenizer, num_image_tokens: int = 1) -> list[int]:
    """Token ids of a prompt ending where the next assistant answer starts (for generation)."""
    pieces = conversation_segments(messages, tokenizer, generation_prompt=True)
    ids = [i for text, _ in pieces for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    return expand_image_tokens(ids, [LM_IGNORE_INDEX] * len(ids), image_id, num_image_tokens)[0]
