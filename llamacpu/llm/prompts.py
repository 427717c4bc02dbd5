"""How a prompt reaches the controller's LM (part of layer 8 of docs/architecture.md): the prompt
encoders, ``<bos> prompt <marker>`` as input embeddings, one marker of :data:`MARKERS`.

The default is a tiny Llama built in code (:func:`llamacpu.llm.models.build_tiny_llama`),
trained from scratch on the CPU over the character-level
:class:`~llamacpu.llm.tokenizer.SymbolTokenizer`, its markers ``<plan>``/``<exec>`` ordinary
token ids (:class:`SymbolPrompts`). A pretrained model (``smollm2-135m``, a local HF
directory, a hub id: :mod:`llamacpu.llm.models`) keeps its own tokenizer and vocabulary: the
prompt goes through its chat template and the markers are learned continuous embeddings
appended after it (:class:`ChatPrompts`); its base weights are frozen, optionally quantized
(bitsandbytes 4/8-bit), and trained only through PEFT LoRA adapters (``lora_r``). Nothing is
ever downloaded by the controller.

Shape letters::

    B  batch                         S  prompt tokens (left-padded)
    H  LM hidden size
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from llamacpu.core.isa import InputError
from llamacpu.llm.tokenizer import SymbolTokenizer
from llamacpu.llm.view import AS_TYPED, PromptView, controller_view

__all__ = ["MARKERS", "controller_view", "SymbolPrompts", "ChatPrompts"]

MARKERS: tuple[str, ...] = ("plan", "exec", "weights", "/weights")
"""What may follow a prompt: ``<plan>``, ``<exec>`` (and the weight-token channel's
``<weights> </weights>``, layer 9)."""


class SymbolPrompts(nn.Module):
    """``<bos> prompt <marker>`` through the :class:`SymbolTokenizer` (the tiny model's):
    every token, the marker included, is a row of the LM's own embedding table."""

    def __init__(self, tokenizer: SymbolTokenizer,
                 view: PromptView = AS_TYPED) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.view = view

    def forward(self, lm: PreTrainedModel, prompts: Sequence[str], marker: str,
                device: torch.device) -> tuple[Tensor, Tensor]:
        """Embeddings ``[B, S, H]`` and mask ``[B, S]`` of the left-padded prompts (as
        :class:`PromptView` reads them)."""
        tok = self.tokenizer
        prompts = [self.view(p) for p in prompts]
        batch = tok.batch(prompts, prefix=(tok.bos_id,), suffix=(tok.token_id(f"<{marker}>"),),
                          device=device)
        return lm.get_input_embeddings()(batch.ids), batch.mask             # [B, S, H], [B, S]

    def rows(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of ``<bos> prompt`` per prompt (no marker)."""
        tok = self.tokenizer
        return [[tok.bos_id, *tok.encode(self.view(p))]
                for p in prompts]

    def marker(self, lm: PreTrainedModel, marker: str, batch: int,
               device: torch.device) -> Tensor:
        """``[B, 1, H]``: the marker token's embedding for every row."""
        ids = torch.full((batch, 1), self.tokenizer.token_id(f"<{marker}>"), dtype=torch.long,
                         device=device)
        return lm.get_input_embeddings()(ids)


class ChatPrompts(nn.Module):
    """A pretrained model's prompts: the task prompt as the user message of its chat template
    (plain text when it has none, :func:`llamacpu.llm.models.format_prompt`), tokenized by the
    model's own tokenizer, then the marker as a LEARNED continuous embedding (a row of
    ``markers [len(MARKERS), H]``), so the vocabulary is never resized and the base
    embedding table stays frozen."""

    def __init__(self, tokenizer, hidden: int, init_std: float = 0.02,
                 view: PromptView = AS_TYPED) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.view = view
        self.markers = nn.Parameter(torch.randn(len(MARKERS), hidden) * init_std)  # [4, H]
        self._ids: dict[str, list[int]] = {}

    def ids(self, prompt: str) -> list[int]:
        """Token ids of the formatted prompt's view (memoised by view: prompts of one view
        share them, and a bounded view has few)."""
        view = self.view(prompt)
        got = self._ids.get(view)
        if got is None:
            from llamacpu.llm.models import format_prompt

            text = format_prompt(self.tokenizer, view)
            templated = getattr(self.tokenizer, "chat_template", None) is not None
            got = list(self.tokenizer(text, add_special_tokens=not templated)["input_ids"])
            if not got:
                raise InputError(f"prompt {prompt!r} tokenizes to nothing")
            if len(self._ids) < 100_000:
                self._ids[view] = got
        return got

    def forward(self, lm: PreTrainedModel, prompts: Sequence[str], marker: str,
                device: torch.device) -> tuple[Tensor, Tensor]:
        """Embeddings ``[B, S, H]`` (prompt tokens, then the marker) and mask ``[B, S]``."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of texts, not one string")
        rows = [self.ids(p) for p in prompts]
        B, S = len(rows), max(len(r) for r in rows)
        ids = torch.zeros(B, S, dtype=torch.long)
        mask = torch.zeros(B, S + 1, dtype=torch.long)
        for b, r in enumerate(rows):                                         # left padding
            ids[b, S - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[b, S - len(r):] = 1
        emb = lm.get_input_embeddings()(ids.to(device))                      # [B, S, H]
        mark = self.markers[MARKERS.index(marker)].to(emb.dtype)             # [H]
        return torch.cat([emb, mark.expand(B, 1, -1)], 1), mask.to(device)   # [B, S+1, H]

    def rows(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of the formatted prompt per prompt (no marker)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of texts, not one string")
        return [self.ids(p) for p in prompts]

    def marker(self, lm: PreTrainedModel, marker: str, batch: int,
               device: torch.device) -> Tensor:
        """``[B, 1, H]``: the learned marker embedding for every row."""
        dtype = lm.get_input_embeddings().weight.dtype
        if not dtype.is_floating_point:
            dtype = self.markers.dtype
        return self.markers[MARKERS.index(marker)].to(device, dtype).expand(batch, 1, -1)
