"""Prompt cleaning and umT5 tokenization, with sentencepiece alone.

The release tokenizes with the Hugging Face T5 tokenizer over `google/umt5-xxl/spiece.model`
(pad 0, EOS 1, unk 2): clean the text, encode it with sentencepiece, append EOS, truncate to
`max_length` keeping EOS last, right-pad with pad ids; the mask marks the non-pad tokens.
For ordinary text this is exactly what `PromptTokenizer` does (tests/models/test_tokenizer.py
compares ids and masks with HF's slow and fast T5 tokenizers).

Known difference: the HF tokenizer treats the literal strings of its special tokens
("</s>", "<pad>", "<unk>", "<extra_id_N>") typed inside a prompt as those tokens;
here they are ordinary text.
"""
from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from typing import Sequence, Union

import torch

logger = logging.getLogger(__name__)

# The Unicode White_Space characters: what `\s` matches in the `regex` module the release
# uses. Python's `re` `\s` also matches U+001C..U+001F, which the release keeps.
_WHITESPACE_RUN = re.compile("[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")

SPIECE_FILENAME = "spiece.model"


def clean_prompt(text: str) -> str:
    """Normalise a prompt as the release does before tokenizing.

    ftfy repairs mojibake and odd characters, HTML entities are unescaped twice (text
    scraped from web pages is often escaped twice), whitespace runs become one space.
    """
    import ftfy  # imported here: only prompt handling needs it

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE_RUN.sub(" ", text).strip()


class PromptTokenizer:
    """Cleans and tokenizes prompts into fixed-length id and mask tensors."""

    def __init__(self, processor, source: Union[str, Path, None] = None):
        """`processor`: a loaded `sentencepiece.SentencePieceProcessor`."""
        self._sp = processor
        self.source = source
        self.pad_id = _special_id(processor, processor.pad_id(), "<pad>")
        self.eos_id = _special_id(processor, processor.eos_id(), "</s>")

    @classmethod
    def from_pretrained(cls, path: Union[str, Path]) -> "PromptTokenizer":
        """From a tokenizer folder (e.g. `google/umt5-xxl`, holding spiece.model) or a .model file."""
        import sentencepiece

        path = Path(path)
        model_file = path / SPIECE_FILENAME if path.is_dir() else path
        if not model_file.is_file():
            raise FileNotFoundError(
                f"no sentencepiece model at {model_file}: pass the umT5 tokenizer folder "
                f"(google/umt5-xxl, containing {SPIECE_FILENAME}) or the .model file itself"
            )
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.Load(str(model_file))
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{model_file}: not a sentencepiece model ({e})") from e
        return cls(processor, source=model_file)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def tokenize(self, text: str) -> list[int]:
        """Ids of the cleaned text, without EOS and without truncation."""
        return list(self._sp.encode(clean_prompt(text)))

    def count_tokens(self, text: str) -> int:
        """Tokens the prompt occupies, EOS included: it is truncated when this exceeds max_length."""
        return len(self.tokenize(text)) + 1

    def __call__(
        self, texts: Union[str, Sequence[str]], max_length: int = 512
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ids, mask: int64 [B, max_length]; EOS after the text, then pad; mask 1 on non-pad."""
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1 (room for EOS), got {max_length}")
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.full((len(texts), max_length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), max_length), dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = self.tokenize(text)
            if len(tokens) + 1 > max_length:
                logger.warning(
                    "prompt truncated from %d to %d tokens: %.60r...", len(tokens) + 1, max_length, text
                )
                tokens = tokens[: max_length - 1]
            tokens.append(self.eos_id)
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        return ids, mask


def _special_id(processor, declared: int, piece: str) -> int:
    """The id a model declares for a special token, else the id of its piece."""
    if declared >= 0:
        return declared
    found = processor.piece_to_id(piece)
    if found == processor.unk_id() and piece != processor.id_to_piece(found):
        raise ValueError(f"the sentencepiece model defines no {piece!r} token")
    return found
