"""The controller's configuration (part of layer 8 of docs/architecture.md): which LM, its size
(for the built-in tiny Llama), and what it emits; every field commented, checked in
``__post_init__``.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamacpu.core.isa import DEFAULT_ALPHABET, N_PORTS, Alphabet
from llamacpu.llm.view import PromptView
from llamacpu.machine.addressing import DEFAULT_ADDRESS_BITS, AddressCodec
from llamacpu.machine.memory import SlotLayout

__all__ = ["QUANT_MODES", "ControllerConfig"]

QUANT_MODES: tuple[str | None, ...] = (None, "4bit", "8bit")
"""Quantizations of a pretrained base model (bitsandbytes)."""


@dataclass(frozen=True)
class ControllerConfig:
    """The controller: which LM, its size (for the built-in tiny Llama), and what it emits."""

    model: str = "tiny"             # "tiny": a Llama built from the fields below; else a local
    #                                 HF directory (AutoModelForCausalLM, local files only)
    hidden_size: int = 64           # H of the tiny Llama
    num_layers: int = 2             # decoder layers of the tiny Llama
    num_heads: int = 4              # attention heads of the tiny Llama (H must divide by it)
    intermediate_size: int = 256    # MLP width of the tiny Llama
    rope_theta: float = 10000.0     # RoPE base of the tiny Llama
    max_slots: int = 96             # N: longest program (ports included) and pointer candidates
    alphabet: Alphabet = DEFAULT_ALPHABET  # values and prompt characters
    address_bits: int = DEFAULT_ADDRESS_BITS  # L of the address codec; must match the machine's
    state_values: bool = False      # also feed the raw operand symbols and the carry to the
    #                                 execute phase; off, it sees op, modes and the ALU's flags
    #                                 (zero per operand, pairwise equality), which is all a
    #                                 jump/write/halt decision depends on, so symbols it never
    #                                 saw in a comparison cannot mislead it
    absolute_positions: bool = False  # ablation: the state token's position is prompt length +
    #                                   step index instead of the fixed prompt length
    lora_r: int = 0                 # pretrained models: LoRA rank on the attention/MLP
    #                                 projections (llamacpu.llm.models.lora_targets); 0: no LoRA.
    #                                 The base weights are frozen either way
    lora_alpha: float | None = None  # LoRA scaling numerator (default 2 · lora_r)
    quant: str | None = None        # pretrained models: None, "4bit" (bitsandbytes NF4) or
    #                                 "8bit" (LLM.int8) base weights
    n_meta: int = 10                # M: metatokens the LM reads where the plan emits a
    #                                 WEIGHTS slot (the weight-token channel, docs/weights.md)
    weight_rank: int = 10           # r of the WEIGHTS slot's delta Δ = U Vfᵀ the weight head
    #                                 decodes from their hidden states
    # The LM's bounded view of the prompt (llamacpu.llm.view.PromptView; the machine's input
    # region always holds the whole prompt). Checkpoints written before a field existed load
    # with it off (0 / False): they were trained without it.
    digit_window: int = 3           # digits of each digit run the LM reads; 0: all
    item_window: int = 4            # items of each list of numbers the LM reads; 0: all
    text_window: int = 4            # characters of the text payload after the first ':'; 0:
    #                                 all (and a ':' is wording like any other character)
    abstract_payload: bool = True   # the LM reads kept digits as '0' and payload characters
    #                                 as '_': each wording has a few views, all certifiable
    operand_window: int = 3         # a prompt of this many number/list payloads or more (an
    #                                 expression, a chain) reads up to its N-th, brackets
    #                                 dropped, each payload one '0'; 0: no window

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads "
                             f"{self.num_heads}")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"head size {self.hidden_size // self.num_heads} must be even "
                             f"(rotary embeddings rotate pairs)")
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be positive, got {self.rope_theta}")
        if self.max_slots < N_PORTS + 1:
            raise ValueError(f"max_slots must leave room for one slot after the ports "
                             f"(>= {N_PORTS + 1}), got {self.max_slots}")
        codec = AddressCodec(self.address_bits)  # checks the range of address_bits
        if codec.capacity < self.max_slots:
            raise ValueError(f"{self.address_bits}-bit addresses reach {codec.capacity} slots, "
                             f"fewer than max_slots = {self.max_slots}")
        if not self.model:
            raise ValueError("model must be 'tiny', 'smollm2-135m', a local Hugging Face "
                             "directory or a hub id")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")
        if self.n_meta < 1 or self.weight_rank < 1:
            raise ValueError(f"n_meta and weight_rank must be at least 1, got {self.n_meta} "
                             f"and {self.weight_rank}")
        _ = self.view  # PromptView checks the windows
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be positive, got {self.lora_alpha}")
        if self.quant not in QUANT_MODES:
            raise ValueError(f"quant must be one of {', '.join(map(str, QUANT_MODES))}, "
                             f"got {self.quant!r}")
        if self.model == "tiny" and (self.lora_r or self.quant):
            raise ValueError("lora_r and quant apply to pretrained models; the tiny model "
                             "trains all of its weights in full precision")

    @property
    def pretrained(self) -> bool:
        """Whether the LM is a pretrained model (frozen base, its own tokenizer)."""
        return self.model != "tiny"

    @property
    def view(self) -> PromptView:
        """How the LM reads a prompt (:mod:`llamacpu.llm.view`)."""
        return PromptView(self.digit_window, self.item_window, self.text_window,
                          self.abstract_payload, self.operand_window)

    @property
    def layout(self) -> SlotLayout:
        """The slot encoding the controller emits (and the machine must use)."""
        return SlotLayout(self.alphabet, AddressCodec(self.address_bits))
