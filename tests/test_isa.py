"""The instruction set module: alphabets, slots, memory layout, and the docs generated from it."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamacpu.core.isa import (
    DEFAULT_ALPHABET,
    MNEMONICS,
    OPS,
    PORT_IN,
    PORT_OUT,
    Alphabet,
    InputError,
    Kind,
    Mode,
    Op,
    Program,
    Slot,
    isa_table_markdown,
    memory_image,
)

ROOT = Path(__file__).resolve().parents[1]


def test_every_op_has_one_spec_in_order():
    assert [s.op for s in OPS] == list(Op)
    assert set(MNEMONICS) == {op.name for op in Op}


@pytest.mark.parametrize("doc", ["README.md", "docs/lasm.md"])
def test_docs_carry_the_generated_isa_table(doc):
    assert isa_table_markdown() in (ROOT / doc).read_text()


def test_default_alphabet_layout():
    a = DEFAULT_ALPHABET
    assert a.base == 10 and a.end == a.size - 1
    assert a.encode("0129") == [0, 1, 2, 9]
    plus = a.encode_char("+")
    assert plus >= a.base and not a.is_digit(plus)
    assert a.decode(a.encode("hello, 42+x")) == "hello, 42+x"


def test_alphabet_rejects_unknown_characters_with_position():
    with pytest.raises(InputError, match="input position 2"):
        DEFAULT_ALPHABET.encode("12Z")


def test_hex_and_byte_alphabets():
    hexa = Alphabet.numeric(16)
    assert hexa.encode("ff") == [15, 15] and "f" not in hexa.charset
    b = Alphabet.byte_alphabet()
    assert b.size == 257 and b.encode("A") == [65] and b.decode([104, 105]) == "hi"


@pytest.mark.parametrize("kwargs", [dict(base=1), dict(base=99), dict(charset="+1"),
                                    dict(charset="++"), dict(base=256, raw_bytes=True,
                                                             charset="x")])
def test_bad_alphabets_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Alphabet(**kwargs)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.text(alphabet=DEFAULT_ALPHABET.charset + "0123456789", max_size=40))
def test_encode_decode_round_trip(text):
    assert DEFAULT_ALPHABET.decode(DEFAULT_ALPHABET.encode(text)) == text


def test_writes_turn_empty_slots_into_data_and_keep_instructions():
    assert Slot().with_val(3).kind == Kind.DATA
    assert Slot().with_ptr(7) == Slot.data(0, 7)
    ins = Slot.instr(Op.ADD, ((Mode.DIRECT, 5), (Mode.DIRECT, 6), (Mode.IMMEDIATE, 0)), imm=4)
    assert ins.with_val(9).kind == Kind.INSTR and ins.with_val(9).args == ins.args


def test_memory_image_places_ports_input_and_output():
    prog = Program(slots=(Slot.data(), Slot.data(), Slot.instr(Op.HALT)), entry=2)
    img = memory_image(prog, "12+3", out_size=5)
    end = DEFAULT_ALPHABET.end
    assert img.in_base == 3 and img.in_len == 4 and img.out_base == 3 + 4 + 1
    assert img.slots[PORT_IN].ptr == img.in_base and img.slots[PORT_OUT].ptr == img.out_base
    assert [s.val for s in img.slots[3:8]] == DEFAULT_ALPHABET.encode("12+3") + [end]
    assert [s.val for s in img.slots[img.out_base:]] == [end] * 5
    assert img.size == len(prog) + 5 + 5
