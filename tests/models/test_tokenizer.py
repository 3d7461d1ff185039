"""Prompt cleaning and tokenization layout (ids, EOS, padding, mask, truncation)."""
from __future__ import annotations

import logging

import pytest
import torch

from sama_rt.models.tokenizer import PromptTokenizer, clean_prompt

from sama_rt.models.tiny_tokenizer import train_tiny_sentencepiece

PAD, EOS = 0, 1


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("umt5_tokenizer")
    train_tiny_sentencepiece(directory)
    return directory


@pytest.fixture(scope="module")
def tok(tokenizer_dir) -> PromptTokenizer:
    return PromptTokenizer.from_pretrained(tokenizer_dir)


# -- cleaning --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, clean",
    [
        ("  make   the\tsky \n red  ", "make the sky red"),
        ("a\u3000b\u00a0c\u2009d", "a b c d"),  # ideographic, no-break and thin spaces
        ("Tom &amp;amp; Jerry", "Tom & Jerry"),  # escaped twice: unescaped twice
        ("&amp;lt;b&amp;gt;bold", "<b>bold"),
        ("cafÃ© au lait", "café au lait"),  # UTF-8 read as Latin-1, repaired by ftfy
        ("\u201cquoted\u201d", '"quoted"'),  # ftfy straightens curly quotes
        ("[Video edit] ", "[Video edit]"),
        ("", ""),
    ],
)
def test_clean_prompt_examples(raw, clean):
    assert clean_prompt(raw) == clean


def test_whitespace_class_is_unicode_white_space():
    # The release collapses `\s+` with the `regex` module (Unicode White_Space), not
    # Python's `re` (which also takes U+001C..U+001F). Check our explicit class against it.
    regex = pytest.importorskip("regex")
    from sama_rt.models.tokenizer import _WHITESPACE_RUN

    every_char = "".join(chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF)
    theirs = regex.findall(r"\s", every_char)
    ours = "".join(_WHITESPACE_RUN.findall(every_char))
    assert len(theirs) > 20
    assert ours == "".join(theirs)


# -- layout ----------------------------------------------------------------------------
def test_ids_eos_pad_and_mask_layout(tok):
    text = "[Video edit] make the sky red"
    expected = list(tok._sp.encode(text))
    assert len(expected) > 3
    ids, mask = tok([text], max_length=32)
    n = len(expected) + 1
    assert ids.dtype == torch.int64 and mask.dtype == torch.int64
    assert ids.shape == mask.shape == (1, 32)
    assert ids[0, :n].tolist() == expected + [EOS]
    assert (ids[0, n:] == PAD).all()
    assert mask[0].tolist() == [1] * n + [0] * (32 - n)
    assert tok.count_tokens(text) == n


def test_text_is_cleaned_before_tokenizing(tok):
    a, _ = tok("  make the&amp;amp;sky   red ", max_length=16)
    b, _ = tok("make the&sky red", max_length=16)
    assert torch.equal(a, b)


def test_empty_prompt_is_eos_only(tok):
    # The negative prompt without --prompt-prefix is "": one EOS token, then padding.
    ids, mask = tok("", max_length=8)
    assert ids.tolist() == [[EOS] + [PAD] * 7]
    assert mask.tolist() == [[1] + [0] * 7]


def test_batch_of_two(tok):
    texts = ["[Video edit] turn the car into a blue truck", "[Video edit]"]
    ids, mask = tok(texts, max_length=24)
    assert ids.shape == (2, 24)
    for row, text in enumerate(texts):
        single_ids, single_mask = tok([text], max_length=24)
        assert torch.equal(ids[row], single_ids[0])
        assert torch.equal(mask[row], single_mask[0])
    lengths = mask.sum(1).tolist()
    assert lengths[0] > lengths[1] >= 2
    assert ids[1, lengths[1] - 1] == EOS and ids[0, lengths[0] - 1] == EOS


def test_truncation_keeps_eos_last(tok, caplog):
    text = " ".join(["replace the cat with a dog"] * 10)
    tokens = list(tok._sp.encode(text))
    assert len(tokens) > 20
    with caplog.at_level(logging.WARNING, logger="sama_rt.models.tokenizer"):
        ids, mask = tok([text], max_length=12)
    assert ids[0].tolist() == tokens[:11] + [EOS]
    assert mask.sum().item() == 12
    assert tok.count_tokens(text) == len(tokens) + 1
    assert any("truncated" in r.message for r in caplog.records)


def test_exact_fit_is_not_truncated(tok, caplog):
    text = "make the sky red"
    n = tok.count_tokens(text)
    with caplog.at_level(logging.WARNING, logger="sama_rt.models.tokenizer"):
        ids, mask = tok(text, max_length=n)
    assert not caplog.records
    assert mask.sum().item() == n and ids[0, -1] == EOS
    shorter, _ = tok(text, max_length=n - 1)
    assert shorter[0].tolist() == ids[0, : n - 2].tolist() + [EOS]


# -- against the Hugging Face T5 tokenizer the release uses ------------------------------
# The release tokenizes with `AutoTokenizer.from_pretrained("google/umt5-xxl")` (padding to
# max_length, truncation) after the same cleaning. That folder is not available here, so the
# HF tokenizers are built over our small sentencepiece model: the slow `T5Tokenizer` and the
# fast one converted from it with a prefix space (the umT5 tokenizer.json's Metaspace adds one).
HF_PROMPTS = [
    "[Video edit] make the sky red", "[Video edit]", "", "  Replace the swan with a white cat. ",
    "Remove   the football!", "Turn into watercolor style, please", "café  au lait ¡hola! 東京 ",
    "x" * 40, "a,b;c:d", "Tom &amp;amp; Jerry", "new\nline\ttab", "ﬁne ligature ① ２",
    "emoji \U0001f389 ok", "[Video edit] turn car into a blue truck " * 20,
]


@pytest.fixture(scope="module")
def hf_tokenizers(tokenizer_dir):
    transformers = pytest.importorskip("transformers", reason="transformers is a test-only dependency")
    model_file = str(tokenizer_dir / "spiece.model")
    return {
        "slow": transformers.T5Tokenizer(model_file, extra_ids=0, legacy=True),
        "fast": transformers.T5TokenizerFast(vocab_file=model_file, extra_ids=0, from_slow=True, add_prefix_space=True),
    }


@pytest.mark.parametrize("kind", ["slow", "fast"])
@pytest.mark.parametrize("max_length", [512, 16])
def test_ids_and_mask_equal_hf_t5_tokenizer(tok, hf_tokenizers, kind, max_length):
    hf = hf_tokenizers[kind]
    truncated = 0
    for prompt in HF_PROMPTS:
        ids, mask = tok([prompt], max_length=max_length)
        theirs = hf([clean_prompt(prompt)], padding="max_length", truncation=True,
                    max_length=max_length, return_tensors="pt")
        assert ids.tolist() == theirs.input_ids.tolist(), prompt
        assert mask.tolist() == theirs.attention_mask.tolist(), prompt
        truncated += tok.count_tokens(prompt) > max_length
    assert (truncated > 3) == (max_length == 16)  # both branches of truncation are compared


# -- loading ---------------------------------------------------------------------------
def test_from_pretrained_accepts_folder_or_model_file(tokenizer_dir, tok):
    direct = PromptTokenizer.from_pretrained(tokenizer_dir / "spiece.model")
    assert direct.vocab_size == tok.vocab_size == 200
    assert (direct.pad_id, direct.eos_id) == (PAD, EOS)


def test_from_pretrained_missing_model_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="spiece.model"):
        PromptTokenizer.from_pretrained(tmp_path)


def test_max_length_must_leave_room_for_eos(tok):
    with pytest.raises(ValueError, match="max_length"):
        tok("a", max_length=0)
