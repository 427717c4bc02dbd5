"""The controller's compile head (part of layer 8 of docs/architecture.md): the LM takes the
compile phase's decisions, one bounded view at a time.

A composed prompt ("calculate (12 + 345) * 6", "add 12 and 345, then multiply by 6")
compiles to a main program of library calls (:mod:`llamacpu.learn.compiling`): a fixed loop
walks the prompt's tokens with an operator stack and at every step asks a policy for one
:class:`~llamacpu.learn.compiling.Action` given a :class:`~llamacpu.learn.compiling.View`
(the current token, the stack's top, and the head word run of the first clause). This
module is that policy on the controller's LM. The LM reads the view alone, never the
whole prompt::

    head-text  <token>  token-text  <decide>+top+opening+closing

(``head-text`` and ``token-text`` tokenized as the LM tokenizes text; a number token reads
as the one digit ``0``, the end of the prompt as no text; ``<token>`` and ``<decide>`` are
learned embeddings, and the stack's top and whether the token comes before the prompt's
first number or after its last are learned embeddings added to ``<decide>``), and
a linear head on the last position scores the :data:`ACTIONS`. A view is bounded whatever
the prompt's length or number of operations, so the head meets at 8 operations only views
it met at 1 or 2 (but for nestings training never had, which are new views:
``learn/compiling.py``), and the views a prompt can show are few enough to certify every
one (``llamacpu.learn.certify.certify_compile``).

The head's parameters are built from a fork of the RNG, so every other parameter's
initialisation is what it was without it, and a checkpoint written before it loads with
it freshly initialised (``learned.FRESH_KEYS``).

Shape letters::

    B  views                         S  tokens of the longest view (left-padded)
    H  LM hidden size                A  actions (len(ACTIONS))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ACTIONS", "TOPS", "CompileHead", "view_ids", "compile_logits", "compile_loss"]

ACTIONS: tuple[str, ...] = ("NUM", "SKIP", "POP", "CLOSE", "FINISH", "PUSH add", "PUSH sub",
                            "PUSH mul", "PUSH rsub", "PUSH (")
"""The compile head's classes: ``str`` of each :class:`~llamacpu.learn.compiling.Action`."""

TOPS: tuple[str, ...] = ("", "add", "sub", "mul", "rsub", "(")
"""What a view's ``top`` can be: the empty stack, then ``compiling.STACK_OPS``."""

_NUMBER_TEXT = "0"
"""How the LM reads a number token (the view shows ``#``): one digit, whatever its digits."""


class CompileHead(nn.Module):
    """The compile head's own parameters: the two markers, the stack-top embeddings and the
    action classifier (the LM is the controller's)."""

    def __init__(self, hidden: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.markers = nn.Parameter(torch.randn(2, hidden) * init_std)        # <token>, <decide>
        self.tops = nn.Parameter(torch.randn(len(TOPS), hidden) * init_std)   # [6, H]
        self.opening = nn.Parameter(torch.randn(2, hidden) * init_std)        # no, opening
        self.closing = nn.Parameter(torch.randn(2, hidden) * init_std)        # no, closing
        self.out = nn.Linear(hidden, len(ACTIONS))

    def forward(self, h: Tensor) -> Tensor:
        """Action logits ``[B, A]`` from the LM's last hidden state ``[B, H]``."""
        return self.out(h)


def _text_ids(controller, text: str) -> list[int]:
    """``text``'s token ids, as the controller's LM tokenizes text (no special tokens)."""
    if not text:
        return []
    tok = controller.tokenizer
    if hasattr(tok, "encode") and hasattr(tok, "bos_id"):  # the tiny model's SymbolTokenizer
        return tok.encode(text)
    return list(tok(text, add_special_tokens=False)["input_ids"])


def view_ids(controller, view) -> tuple[list[int], list[int], int]:
    """The token ids of a view's head text and token text, and its top's index in
    :data:`TOPS`. ValueError for a top the head does not know."""
    token = {"#": _NUMBER_TEXT, "<end>": ""}.get(view.token, view.token)
    if view.top not in TOPS:
        raise ValueError(f"a compile view's top must be one of {TOPS}, got {view.top!r}")
    return _text_ids(controller, view.head), _text_ids(controller, token), TOPS.index(view.top)


def compile_logits(controller, views: Sequence) -> Tensor:
    """``[B, A]`` action logits of ``views`` (compile Views), one LM pass over all of them."""
    if not views:
        raise ValueError("compile_logits needs at least one view")
    head: CompileHead = controller.compile_head
    emb = controller.lm.get_input_embeddings()
    device = controller.device
    rows = [view_ids(controller, v) for v in views]
    # every row is  head-ids <token> token-ids <decide>, left-padded: ids [B, S] and what
    # each position holds (0 padding, 1 text, 2 <token>, 3 <decide>), built in one go
    seqs = [(h + [0] + t + [0], [1] * len(h) + [2] + [1] * len(t) + [3]) for h, t, _ in rows]
    B, S = len(seqs), max(len(ids) for ids, _ in seqs)
    ids = torch.zeros(B, S, dtype=torch.long)
    what = torch.zeros(B, S, dtype=torch.long)
    for b, (r, w) in enumerate(seqs):
        ids[b, S - len(r):] = torch.tensor(r, dtype=torch.long)
        what[b, S - len(w):] = torch.tensor(w, dtype=torch.long)
    ids, what = ids.to(device), what.to(device)
    top = torch.tensor([t for _, _, t in rows], dtype=torch.long, device=device)
    opening = torch.tensor([v.opening for v in views], dtype=torch.long, device=device)
    closing = torch.tensor([v.closing for v in views], dtype=torch.long, device=device)
    text = emb(ids)                                                          # [B, S, H]
    dtype = text.dtype if text.dtype.is_floating_point else head.markers.dtype
    decide = (head.markers[1] + head.tops[top] + head.opening[opening]
              + head.closing[closing]).to(dtype)                             # [B, H]
    x = (text.to(dtype) * (what == 1)[..., None]
         + head.markers[0].to(dtype) * (what == 2)[..., None]
         + decide[:, None] * (what == 3)[..., None])                         # [B, S, H]
    mask = (what > 0).long()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    h, _ = controller._run_lm(x, mask, pos)                                   # [B, S, H]
    return head(h[:, -1].to(head.out.weight.dtype))                          # [B, A]


def compile_loss(controller, views: Sequence, actions: Sequence) -> tuple[Tensor, dict]:
    """Cross-entropy of the head on ``views`` against the expert's ``actions`` (each
    distinct view once: a chain repeats its number and wording views at every clause,
    and a view's decision is one fact however often it occurs), and its accuracy."""
    pairs = dict(zip(views, (str(a) for a in actions)))
    vs = list(pairs)
    target = torch.tensor([ACTIONS.index(pairs[v]) for v in vs], dtype=torch.long,
                          device=controller.device)
    logits = compile_logits(controller, vs)
    loss = F.cross_entropy(logits.float(), target)
    with torch.no_grad():
        acc = float((logits.argmax(-1) == target).float().mean())
    return loss, {"compile_loss": float(loss.detach()), "compile_acc": acc,
                  "compile_views": float(len(vs))}

