"""A small sentencepiece model with umT5's special ids, trained on the fly.

Used by the "tiny" configuration (demo, tests, benchmarks): the real umT5 tokenizer is
large and comes with the user's weights. This one shares what the code depends on: a
unigram model with pad 0, EOS 1, unk 2 and no BOS. Training takes ~0.2 s and is
deterministic.
"""
from __future__ import annotations

import io
import random
import string
from pathlib import Path

_WORDS = (
    "make the sky red turn car into a blue truck add snow to street remove person from video "
    "change background beach night city replace cat with dog edit style painting cartoon "
    "golden hour rain forest mountain river"
).split()


def _sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)

    def word() -> str:
        if rng.random() < 0.6:
            return rng.choice(_WORDS)
        # Random letter strings give the trainer enough distinct pieces for a 200 vocab.
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 7)))

    return [
        ("[Video edit] " if rng.random() < 0.5 else "")
        + " ".join(word() for _ in range(rng.randint(3, 12)))
        + rng.choice([".", "!", "", " ,"])
        for _ in range(count)
    ]


def tiny_sentencepiece_proto(vocab_size: int = 200) -> bytes:
    """The serialized model."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_sentences(600)),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    return model.getvalue()


def train_tiny_sentencepiece(directory: Path, vocab_size: int = 200) -> Path:
    """Write `directory/spiece.model` (as in the google/umt5-xxl folder) and return its path."""
    path = Path(directory) / "spiece.model"
    path.write_bytes(tiny_sentencepiece_proto(vocab_size))
    return path


def tiny_tokenizer():
    """A PromptTokenizer over the tiny model, built in memory."""
    import sentencepiece

    from .tokenizer import PromptTokenizer

    processor = sentencepiece.SentencePieceProcessor(model_proto=tiny_sentencepiece_proto())
    return PromptTokenizer(processor, source="tiny")
