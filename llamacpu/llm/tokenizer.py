"""The tiny controller LM's tokenizer (part of layer 8 of docs/architecture.md): character-level,
over an alphabet's characters, plus :data:`SPECIAL_TOKENS`.

A pretrained LM keeps its own tokenizer (:mod:`llamacpu.llm.models`); this one is only for
the tiny Llama trained from scratch (:func:`llamacpu.llm.models.build_tiny_llama`).

Shape letters::

    B  batch                         S  tokens (left-padded)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from llamacpu.core.isa import DEFAULT_ALPHABET, Alphabet, InputError

__all__ = ["SPECIAL_TOKENS", "TokenBatch", "SymbolTokenizer"]

SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<bos>", "<eos>", "<plan>", "<exec>", "<weights>", "</weights>",
)
"""Special tokens, ids 0..6 in this order; ``<weights> </weights>`` are reserved for the
weight-token channel (layer 9) and unused here."""


class TokenBatch(NamedTuple):
    """A padded batch of token ids."""

    ids: Tensor   # [B, S] long
    mask: Tensor  # [B, S] long, 1 on real tokens, 0 on padding


class SymbolTokenizer:
    """Character-level tokenizer over an alphabet's characters, plus :data:`SPECIAL_TOKENS`.

    Ids: the specials first, then one id per alphabet symbol except END, in symbol order
    (so the default alphabet gives ``7 + 54 = 61`` tokens). Text is split into single
    characters, so a special token can only be added by id, never injected through text.
    """

    def __init__(self, alphabet: Alphabet = DEFAULT_ALPHABET) -> None:
        self.alphabet = alphabet
        chars = [alphabet.decode_symbol(v) for v in range(alphabet.size - 1)]  # END has no char
        self._itos: tuple[str, ...] = (*SPECIAL_TOKENS, *chars)
        self._stoi = {s: i for i, s in enumerate(self._itos)}
        if len(self._stoi) != len(self._itos):
            raise ValueError(f"alphabet {alphabet.describe()} repeats a character")

    def __len__(self) -> int:
        return len(self._itos)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def token_id(self, token: str) -> int:
        """The id of one special token or character."""
        try:
            return self._stoi[token]
        except KeyError:
            raise InputError(f"{token!r} is not a token of this tokenizer "
                             f"({self.alphabet.describe()} plus {SPECIAL_TOKENS})") from None

    pad_id = property(lambda self: self._stoi["<pad>"])
    bos_id = property(lambda self: self._stoi["<bos>"])
    eos_id = property(lambda self: self._stoi["<eos>"])
    plan_id = property(lambda self: self._stoi["<plan>"])
    exec_id = property(lambda self: self._stoi["<exec>"])
    weights_id = property(lambda self: self._stoi["<weights>"])
    weights_end_id = property(lambda self: self._stoi["</weights>"])

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        """Ids of ``text``, one per character; InputError names the first bad position."""
        out = [self.bos_id] if bos else []
        for pos, ch in enumerate(text):
            i = self._stoi.get(ch)
            if i is None or i < len(SPECIAL_TOKENS):
                raise InputError(f"character {ch!r} at position {pos} of {text!r} is not in "
                                 f"the tokenizer's alphabet ({self.alphabet.describe()})")
            out.append(i)
        if eos:
            out.append(self.eos_id)
        return out

    def decode(self, ids: Sequence[int] | Tensor, *, skip_special: bool = False) -> str:
        """Text of ids; specials appear by name unless ``skip_special``."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= i < len(self._itos):
                raise ValueError(f"token id {i} outside 0..{len(self._itos) - 1}")
            if skip_special and i < len(SPECIAL_TOKENS):
                continue
            out.append(self._itos[i])
        return "".join(out)

    def batch(self, texts: Sequence[str], *, prefix: Sequence[int] = (),
              suffix: Sequence[int] = (), padding_side: str = "left",
              device: torch.device | str | None = None) -> TokenBatch:
        """``prefix + encode(text) + suffix`` per text, padded with ``<pad>`` to the longest.

        Left padding (the default) puts every row's last token in the last column, which is
        what the controller appends slot and state embeddings to.
        """
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if isinstance(texts, str):
            raise TypeError("batch takes a sequence of texts, not one string")
        rows = [[*prefix, *self.encode(t), *suffix] for t in texts]
        if not rows:
            raise ValueError("batch needs at least one text")
        S = max(len(r) for r in rows)
        ids = torch.full((len(rows), S), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), S, dtype=torch.long)
        for b, r in enumerate(rows):
            cols = slice(S - len(r), S) if padding_side == "left" else slice(0, len(r))
            ids[b, cols] = torch.tensor(r, dtype=torch.long)
            mask[b, cols] = 1
        return TokenBatch(ids.to(device), mask.to(device))
