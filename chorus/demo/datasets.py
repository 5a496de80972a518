"""The demo data: scikit-learn's bundled digits (no download), split the same way everywhere."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED = 0
TEST_SIZE = 0.3
LABELS: tuple[str, ...] = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits_split() -> Split:
    """8x8 digit images as FP32 rows of 64 pixels (0..16), 70/30 stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x.astype(np.float32),
        y.astype(np.int64),
        test_size=TEST_SIZE,
        random_state=SEED,
        stratify=y,
    )
    return Split(x_tr, y_tr, x_te, y_te)


# Noisy captions: the same digits described in words, for a text model to fuse late with the
# image models. The noise depends only on the label and a seed, never on the image, so the
# text model's errors are independent of the image models' errors. Every caption is lowercase
# with single spaces (the ONNX char tokenizer neither lowercases nor folds whitespace).
#
# Expected accuracy of a good text model on held-out captions: about
# INFORMATIVE * (1 - typo damage) + UNINFORMATIVE_RATE / 10, roughly 0.70-0.75.
UNINFORMATIVE_RATE = 0.15  # says nothing about the digit ("hard to read")
MISLEADING_RATE = 0.10  # names a different digit, chosen uniformly among the other nine
TYPO_RATE = 0.04  # per character: substitute, delete or duplicate (equally likely)

DIGIT_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
# {w}: the digit as a word, {d}: as a numeral.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a handwritten {w}",
    "looks like {d}",
    "the number {w}, i think",
    "{w}",
    "{d}",
    "probably a {w}",
    "i see a {d}",
    "that's a {w}",
    "digit {d}",
    "maybe a {w}?",
    "clearly the digit {w}",
    "a sloppy {d}",
)
UNINFORMATIVE_CAPTIONS: tuple[str, ...] = (
    "a scribbled digit",
    "hard to read",
    "no idea",
    "some number",
    "can't tell what this is",
    "a blurry digit",
    "illegible",
    "a handwritten digit",
)
_TYPO_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def digit_captions(labels: np.ndarray, seed: int) -> np.ndarray:
    """Object array [n, 1] of lowercase str captions of `labels`, noisy but deterministic.

    Each caption is, independently: uninformative (UNINFORMATIVE_RATE), naming another digit
    (MISLEADING_RATE), or naming the label; then each character gets a typo with TYPO_RATE.
    Use a different seed per split (e.g. 1 for train, 2 for test).
    """
    rng = np.random.default_rng(seed)
    ys = np.asarray(labels, dtype=np.int64).ravel()
    out = np.empty((len(ys), 1), dtype=object)
    for i, y in enumerate(ys):
        kind = rng.random()
        if kind < UNINFORMATIVE_RATE:
            text = UNINFORMATIVE_CAPTIONS[rng.integers(len(UNINFORMATIVE_CAPTIONS))]
        else:
            digit = int(y)
            if kind < UNINFORMATIVE_RATE + MISLEADING_RATE:
                digit = (digit + int(rng.integers(1, 10))) % 10
            template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
            text = template.format(w=DIGIT_WORDS[digit], d=digit)
        out[i, 0] = _typos(text, rng)
    return out


def _typos(text: str, rng: np.random.Generator) -> str:
    chars: list[str] = []
    for c in text:
        if rng.random() >= TYPO_RATE:
            chars.append(c)
            continue
        action = rng.integers(3)
        if action == 0:
            chars.append(_TYPO_ALPHABET[rng.integers(len(_TYPO_ALPHABET))])
        elif action == 2:
            chars.append(c + c)
        # action 1 deletes the character
    return " ".join("".join(chars).split()) or text
