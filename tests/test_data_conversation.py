"""Records -> token ids and label masks; the offline tokenizer; the dataset and collators."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from spatialboost.constants import LM_IGNORE_INDEX
from spatialboost.data.collate import PackedCollator, PaddedCollator, pack_lengths
from spatialboost.data.conversation import (
    EmptyLabelsError,
    TruncatedError,
    prompt_ids,
    record_messages,
    tokenize_conversation,
)
from spatialboost.data.dataset import ConversationDataset
from spatialboost.data.tokenizer import IM_END, load_tokenizer, save_tokenizer, train_tokenizer
from spatialboost.errors import UserError
from train_fixtures import write_records

N_IMG = 4  # image tokens per <image> in these tests


def make_record(i: int, n_images: int = 1, turns: int = 3) -> dict:
    conv = []
    for t in range(turns):
        prefix = "<image>\n" * n_images if t == 0 else ""
        conv.append(
            {"from": "human", "value": f"{prefix}What is the depth value at coordinate ({i}, {t + 7})?"}
        )
        conv.append(
            {"from": "gpt", "value": f"The depth is {i}.{t}{i} m, so it is {'near' if t else 'far'}."}
        )
    images = [f"images/{i}_{v}.png" for v in range(n_images)]
    return {"id": f"s{i}", "image": images[0] if n_images == 1 else images, "conversations": conv}


@pytest.fixture(scope="module")
def tokenizer():
    corpus = [t["value"] for i in range(20) for t in make_record(i, 2)["conversations"]]
    return train_tokenizer(corpus, vocab_size=400)


@pytest.fixture(scope="module")
def fallback_tokenizer(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    return tok


def answer_spans(labels: list[int]) -> list[list[int]]:
    spans, current = [], []
    for label in labels:
        if label != LM_IGNORE_INDEX:
            current.append(label)
        elif current:
            spans.append(current)
            current = []
    return spans + ([current] if current else [])


def collapse_images(ids: list[int], image_id: int) -> list[int]:
    """Undo the N-fold expansion of each image block (blocks are N long, back to back for multi-view)."""
    out, run = [], 0
    for token in ids:
        if token == image_id:
            run += 1
            if run % N_IMG == 0:
                out.append(token)
        else:
            assert run % N_IMG == 0, "an image block is not N tokens long"
            run = 0
            out.append(token)
    return out


# --- tokenizer --------------------------------------------------------------------------------------


def test_tokenizer_special_tokens_and_digits(tokenizer):
    assert tokenizer.tokenize("<image>") == ["<image>"]
    ids = tokenizer("a <image> b", add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids("<image>")) == 1
    digits = [t for t in tokenizer.tokenize("depth 2.31 m at (118, 40)") if any(c.isdigit() for c in t)]
    assert digits == ["2", "3", "1", "1", "1", "8", "4", "0"]  # every digit its own token
    assert tokenizer.decode(tokenizer("It is 12.05 m.")["input_ids"]) == "It is 12.05 m."
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_tokenizer_save_load_roundtrip_and_deterministic(tokenizer, tmp_path):
    save_tokenizer(tokenizer, tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    loaded = load_tokenizer(tmp_path)
    messages = record_messages(make_record(3, 2))
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert loaded.apply_chat_template(messages, tokenize=False) == text
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)
    corpus = [t["value"] for i in range(20) for t in make_record(i, 2)["conversations"]]
    assert train_tokenizer(corpus, vocab_size=400).get_vocab() == tokenizer.get_vocab()


# --- label masks ------------------------------------------------------------------------------------


def test_labels_cover_exactly_every_answer_with_template(tokenizer):
    record = make_record(5, n_images=1, turns=4)
    sample = tokenize_conversation(record, tokenizer, N_IMG)
    answers = [t["value"] for t in record["conversations"] if t["from"] == "gpt"]
    spans = answer_spans(sample.labels)
    assert [tokenizer.decode(s) for s in spans] == [a + IM_END for a in answers]
    labelled = [i for i, label in enumerate(sample.labels) if label != LM_IGNORE_INDEX]
    assert all(sample.labels[i] == sample.input_ids[i] for i in labelled)
    # the ids are the template rendering, tokenized
    text = tokenizer.apply_chat_template(record_messages(record), tokenize=False)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert tokenizer.decode(collapse_images(sample.input_ids, image_id)) == text


def test_labels_with_fallback_format(fallback_tokenizer):
    tok = fallback_tokenizer
    record = make_record(2, n_images=1, turns=3)
    sample = tokenize_conversation(record, tok, N_IMG)
    answers = [t["value"] for t in record["conversations"] if t["from"] == "gpt"]
    assert [tok.decode(s) for s in answer_spans(sample.labels)] == [f" {a}{tok.eos_token}" for a in answers]
    text = tok.decode(collapse_images(sample.input_ids, tok.convert_tokens_to_ids("<image>")))
    assert text.startswith(tok.bos_token + "A chat between")
    assert " USER: <image>\nWhat is the depth" in text and " ASSISTANT: The depth is" in text


def test_multi_image_tokens_in_place(tokenizer):
    record = make_record(7, n_images=1, turns=3)
    record["image"] = ["v0.png", "v1.png", "v2.png"]
    record["conversations"][0]["value"] = "<image>\n<image>\nCompare the views."
    record["conversations"][2]["value"] = "And this one? <image>"
    sample = tokenize_conversation(record, tokenizer, N_IMG)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert sample.num_images == 3
    assert sample.input_ids.count(image_id) == 3 * N_IMG
    assert all(sample.labels[i] == LM_IGNORE_INDEX for i, t in enumerate(sample.input_ids) if t == image_id)
    text = tokenizer.apply_chat_template(record_messages(record), tokenize=False)
    assert tokenizer.decode(collapse_images(sample.input_ids, image_id)) == text
    # the third image's block sits inside the second user turn, before the second answer
    last_image = max(i for i, t in enumerate(sample.input_ids) if t == image_id)
    spans_start = [
        i
        for i in range(1, len(sample.labels))
        if sample.labels[i] != LM_IGNORE_INDEX and sample.labels[i - 1] == LM_IGNORE_INDEX
    ]
    assert spans_start[0] < last_image < spans_start[1]


def test_placeholder_count_must_match_images(tokenizer):
    record = make_record(1, n_images=2)
    record["image"] = record["image"][:1]
    with pytest.raises(ValueError, match="placeholders"):
        tokenize_conversation(record, tokenizer, N_IMG)


def test_no_answer_is_an_error(tokenizer):
    record = make_record(1)
    record["conversations"] = record["conversations"][:1]
    with pytest.raises(EmptyLabelsError, match="s1"):
        tokenize_conversation(record, tokenizer, N_IMG)


def test_truncation_keeps_whole_images_and_refuses_to_cut_all_answers(tokenizer):
    record = make_record(4, n_images=2, turns=3)
    full = tokenize_conversation(record, tokenizer, N_IMG)
    first_answer = next(i for i, label in enumerate(full.labels) if label != LM_IGNORE_INDEX)
    with pytest.raises(TruncatedError, match="s4"):
        tokenize_conversation(record, tokenizer, N_IMG, max_length=first_answer)
    cut = tokenize_conversation(record, tokenizer, N_IMG, max_length=first_answer + 3)
    assert len(cut) == first_answer + 3 and cut.num_images == 2
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    start = full.input_ids.index(image_id)
    partial = tokenize_conversation(record, tokenizer, N_IMG, max_length=first_answer + 3)
    assert partial.input_ids.count(image_id) == 2 * N_IMG
    # a cut through the second image drops that image whole (and then no answer remains)
    with pytest.raises(TruncatedError):
        tokenize_conversation(record, tokenizer, N_IMG, max_length=start + N_IMG + 2)


def test_prompt_ids_are_a_prefix_of_the_training_ids(tokenizer, fallback_tokenizer):
    for tok in (tokenizer, fallback_tokenizer):
        record = make_record(3, turns=2)
        messages = record_messages(record)
        sample = tokenize_conversation(record, tok, N_IMG)
        prompt = prompt_ids(messages[:3], tok, N_IMG)  # up to the second question
        assert sample.input_ids[: len(prompt)] == prompt
        assert sample.labels[len(prompt)] != LM_IGNORE_INDEX  # the answer starts right after


# --- collators --------------------------------------------------------------------------------------


def as_sample(sample, n_images: int) -> dict:
    return {
        "id": sample.id,
        "input_ids": torch.tensor(sample.input_ids),
        "labels": torch.tensor(sample.labels),
        "pixel_values": torch.randn(n_images, 3, 8, 8),
    }


def test_pack_lengths_is_a_partition():
    lengths = [5, 9, 3, 7, 2, 8, 1, 10]
    rows = pack_lengths(lengths, 12)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 12 for row in rows)
    assert len(rows) < len(lengths)
    with pytest.raises(ValueError):
        pack_lengths([13], 12)


def test_packed_batch_layout(tokenizer):
    samples = [
        as_sample(tokenize_conversation(make_record(i, i % 3), tokenizer, N_IMG), i % 3) for i in range(5)
    ]
    batch = PackedCollator(tokenizer.pad_token_id, 400)(samples)
    assert batch["input_ids"].shape[0] < 5
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert int((batch["input_ids"] == image_id).sum()) == batch["pixel_values"].shape[0] * N_IMG
    for r in range(batch["input_ids"].shape[0]):
        for k in batch["seq_ids"][r].unique().tolist():
            where = batch["seq_ids"][r] == k
            if k == 0:
                assert (batch["labels"][r][where] == LM_IGNORE_INDEX).all()
                continue
            assert batch["position_ids"][r][where].tolist() == list(range(int(where.sum())))
    # total label tokens are the same as padded (minus nothing: position 0 is never a label anyway)
    padded = PaddedCollator(tokenizer.pad_token_id)(samples)
    assert int((padded["labels"] != LM_IGNORE_INDEX).sum()) == int((batch["labels"] != LM_IGNORE_INDEX).sum())


def test_empty_label_batch_raises_with_ids(tokenizer):
    sample = as_sample(tokenize_conversation(make_record(1, 0), tokenizer, N_IMG), 0)
    sample["labels"] = torch.full_like(sample["labels"], LM_IGNORE_INDEX)
    for collate in (PaddedCollator(tokenizer.pad_token_id), PackedCollator(tokenizer.pad_token_id, 512)):
        with pytest.raises(EmptyLabelsError, match="s1"):
            collate([sample])


# --- dataset ----------------------------------------------------------------------------------------


def write_dataset(root, records) -> None:
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for record in records:
        paths = [record["image"]] if isinstance(record.get("image"), str) else record.get("image", [])
        for path in paths:
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(root / path)
    write_records(root, records)


def test_dataset_reads_shards_images_and_skips_with_reason(tokenizer, tmp_path):
    records = [make_record(i, n_images=1 + i % 2) for i in range(4)]
    write_dataset(tmp_path, records)
    ds = ConversationDataset(tmp_path, tokenizer, N_IMG, image_size=8, max_length=None)
    assert len(ds) == 4 and ds.skipped == []
    item = ds[1]
    assert item["pixel_values"].shape == (2, 3, 8, 8)
    assert item["pixel_values"].dtype == torch.float32
    assert int((item["input_ids"] == tokenizer.convert_tokens_to_ids("<image>")).sum()) == 2 * N_IMG

    assert ds.truncated == []
    full_lengths = [len(s) for s in ds.samples]
    records[3]["conversations"][0]["value"] += " Describe the scene." * 40  # first answer beyond 200 tokens
    records[2]["conversations"][-1]["value"] += " And more." * 80  # the last answer past 200 tokens: cut
    write_records(tmp_path, records)
    short = ConversationDataset(tmp_path, tokenizer, N_IMG, image_size=8, max_length=200)
    assert len(short) == 3 and [sid for sid, _ in short.skipped] == ["s3"]
    # a conversation cut short is counted, with its length before the cut (the dataset warns)
    assert [s.id for s in short.truncated] == ["s2"] and short.truncated[0].full_length > 200 >= len(
        short[2]["input_ids"]
    )
    assert short.truncated[0].full_length > full_lengths[2]
    assert "max_length=200 cuts every answer" in short.skipped[0][1]
    assert all(len(s) <= 200 for s in short.samples)
    with pytest.raises(TruncatedError, match="s3"):
        ConversationDataset(tmp_path, tokenizer, N_IMG, image_size=8, max_length=200, on_overflow="error")


def test_swap_images_serves_another_scenes_images_with_the_same_text(tokenizer, tmp_path):
    """The no-language control: each sample's text with the next sample's images of as many views."""
    write_dataset(tmp_path, [make_record(i, n_images=1 + i % 2) for i in range(5)])
    own = ConversationDataset(tmp_path, tokenizer, N_IMG, image_size=8)
    swapped = ConversationDataset(tmp_path, tokenizer, N_IMG, image_size=8, swap_images=True)
    assert swapped.image_source == [2, 3, 4, 1, 0]  # views 1, 2, 1, 2, 1: partners with as many views
    for i, j in enumerate(swapped.image_source):
        assert torch.equal(swapped[i]["input_ids"], own[i]["input_ids"])
        assert torch.equal(swapped[i]["pixel_values"], own[j]["pixel_values"])
        assert not torch.equal(swapped[i]["pixel_values"], own[i]["pixel_values"])


def test_dataset_without_manifest_names_the_folder(tokenizer, tmp_path):
    """Shards lying in the folder are not a dataset: the reader follows the manifest the engine writes."""
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "part-0.jsonl").write_text(json.dumps(make_record(0)) + "\n")
    with pytest.raises(UserError, match=f"{tmp_path / 'manifest.json'}: missing"):
        ConversationDataset(tmp_path, tokenizer, N_IMG, image_size=8)
    with pytest.raises(UserError, match="no such dataset directory"):
        ConversationDataset(tmp_path / "nope", tokenizer, N_IMG, image_size=8)


def test_dataset_refuses_paths_outside_root(tokenizer, tmp_path):
    """A record whose image leads outside the dataset is skipped with its reason, not read (and not a crash)."""
    records = [make_record(0), make_record(1)]
    write_dataset(tmp_path, records)
    records[1]["image"] = "../outside.png"
    write_records(tmp_path, records)
    for on_overflow in ("skip", "error"):
        ds = ConversationDataset(tmp_path, tokenizer, N_IMG, image_size=8, on_overflow=on_overflow)
        assert len(ds) == 1 and ds[0]["id"] == records[0]["id"]
        assert [i for i, _ in ds.skipped] == [records[1]["id"]] and "outside" in ds.skipped[0][1]
