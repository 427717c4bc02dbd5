"""The assembler and disassembler (llamacpu/asm.py) and the program strategy (evaluate/fuzz.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamacpu.asm import main as asm_main
from llamacpu.core.asm import AssemblyError, assemble
from llamacpu.core.disasm import disassemble
from llamacpu.core.isa import (
    DEFAULT_ALPHABET,
    SPEC,
    Alphabet,
    Kind,
    Mode,
    Op,
    Program,
    Slot,
    SourceLoc,
)
from llamacpu.evaluate.fuzz import BUDGET, inputs, lasm_texts, mutated, programs

D, I, M = Mode.DIRECT, Mode.INDIRECT, Mode.IMMEDIATE
ROOT = Path(__file__).resolve().parents[1]
PROGRAM_FILES = sorted((ROOT / "programs").glob("*.lasm"))
PORTS = (Slot.data(0, 0), Slot.data(0, 0))
FUZZ = settings(max_examples=500, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HAS_GRAPH = importlib.util.find_spec("llamacpu.core.graph") is not None
HAS_INTERP = importlib.util.find_spec("llamacpu.core.interp") is not None

ECHO = """\
; copy the input to the output
start:  lea   o, [OUT]
loop:   jeq   [IN], #END, done
        mov   [o], [IN]
        inc   IN
        inc   o
        jmp   loop
done:   halt
o:      .ptr  OUT
"""


# ------------------------------------------------------------------ assembling

def test_echo_assembles_to_the_expected_slots():
    p = assemble(ECHO, file="echo.lasm")
    end = DEFAULT_ALPHABET.end
    assert p.slots == PORTS + (
        Slot.instr(Op.LEA, ((D, 9), (I, 1))),
        Slot.instr(Op.JEQ, ((I, 0), (M, 0), (D, 8)), imm=end),
        Slot.instr(Op.MOV, ((I, 9), (I, 0))),
        Slot.instr(Op.INC, ((D, 0),)),
        Slot.instr(Op.INC, ((D, 9),)),
        Slot.instr(Op.JMP, ((D, 3),)),
        Slot.instr(Op.HALT),
        Slot.data(0, 1),
    )
    assert p.entry == 2 and p.name == "echo.lasm" and p.alphabet == DEFAULT_ALPHABET
    assert p.symbols == {"IN": 0, "OUT": 1, "start": 2, "loop": 3, "done": 8, "o": 9}
    assert p.source_map[3] == SourceLoc("echo.lasm", 3, 9,
                                        "loop:   jeq   [IN], #END, done")
    assert p.source_map[9].line == 9 and p.source_map[9].col == 9
    assert set(p.source_map) == set(range(2, 10))


def test_data_directives_values_and_offsets():
    src = """
        halt
xs:     .data 1, 'a', END, "hi", 9
s:      .string "a;\\x2b"      ; comment with 'quotes' and "strings"
sp:     .space 2, END
        .space 1
e:      .empty 2
p:      .ptr  xs+2, 7
q:      .ptr  e-1
"""
    a = DEFAULT_ALPHABET
    p = assemble(src)
    assert p.slots[3:8] == tuple(Slot.data(v) for v in
                                 [1, a.encode_char("a"), a.end, *a.encode("hi")])
    assert p.slots[8] == Slot.data(9)
    assert p.slots[9:13] == tuple(Slot.data(v) for v in a.encode("a;+") + [a.end])
    assert p.slots[13:16] == (Slot.data(a.end), Slot.data(a.end), Slot.data(0))
    assert p.slots[16:18] == (Slot(), Slot())
    assert p.slots[18] == Slot.data(7, 5) and p.slots[19] == Slot.data(0, 15)
    assert p.symbols["xs"] == 3 and p.symbols["s"] == 9 and p.symbols["q"] == 19
    assert len(p) == 20


def test_operand_forms_and_case_insensitive_mnemonics():
    src = """
start:  MoV   x+1, #'+'
        lea   p, [p+1]
        Add   [p], x, #9
        jne   x, #END, [q]
        halt
x:      .data 0, 0
p:      .ptr  x
q:      .ptr  start
"""
    p = assemble(src)
    x, pp, q = 7, 9, 10
    plus = DEFAULT_ALPHABET.encode_char("+")
    assert p.slots[2] == Slot.instr(Op.MOV, ((D, x + 1), (M, 0)), imm=plus)
    assert p.slots[3] == Slot.instr(Op.LEA, ((D, pp), (I, pp + 1)))
    assert p.slots[4] == Slot.instr(Op.ADD, ((I, pp), (D, x), (M, 0)), imm=9)
    assert p.slots[5] == Slot.instr(Op.JNE, ((D, x), (M, 0), (I, q)), imm=DEFAULT_ALPHABET.end)
    assert p.slots[q] == Slot.data(0, 2)


def test_labels_alone_several_per_slot_and_entry():
    p = assemble("a:\nb: c:\n  .data 1\nfirst: nop\nstart: halt\n")
    assert p.symbols["a"] == p.symbols["b"] == p.symbols["c"] == 2
    assert p.entry == 4 == p.symbols["start"]
    assert assemble("x: .data 1\n  nop\n  halt").entry == 3  # no start: first instruction


def test_alphabet_directives():
    hexp = assemble(".alphabet base 16\n mov x, #15\n halt\nx: .data 'f', 'z'\n")
    assert hexp.alphabet == Alphabet.numeric(16) and hexp.slots[2].val == 15
    assert hexp.slots[4].val == 15  # 'f' is a hex digit
    assert hexp.slots[5].val == Alphabet.numeric(16).encode_char("z")
    cs = assemble('.alphabet base 2 charset "+\\x41\\t\\\\" ; comment\n halt\n'
                  "x: .data '\\x41', '\\t', '\\\\', 1\n")
    assert cs.alphabet == Alphabet(2, "+A\t\\")
    assert [s.val for s in cs.slots[3:7]] == [3, 4, 5, 1]
    by = assemble(".ALPHABET BYTES\n mov x, #255\n halt\nx: .data 'é', END\n")
    assert by.alphabet.raw_bytes and by.slots[2].val == 255
    assert by.slots[4].val == 0xE9 and by.slots[5].val == 256


def test_one_past_the_end_is_an_address_and_memory_size_is_exact():
    p = assemble("halt\nx: .ptr x+1\n")
    assert p.slots[3] == Slot.data(0, 4) and len(p) == 4
    assert len(assemble("halt\n.space 2", memory_size=5)) == 5
    with pytest.raises(AssemblyError, match="does not fit in memory"):
        assemble("halt\n.space 3", memory_size=5)
    with pytest.raises(ValueError):
        assemble("halt", memory_size=2)


# ---------------------------------------------------------------------- errors

ERRORS = [
    # (source, line, col, message fragment)
    ("x: .data 0\n        addd x, y", 2, 9, "unknown op 'ADDD'"),
    ("mov x\nx: .data 0", 1, 1, "MOV takes 2 operand(s) (dst, slot), got 1"),
    ("halt x\nx: .data 0", 1, 6, "HALT takes 0 operand(s) (none), got 1"),
    ("inc x, x\nx: .data 0", 1, 8, "INC takes 1 operand(s) (ptr), got 2"),
    ("mov x y\nx: .data 0", 1, 7, "expected ',' between operands, found 'y'"),
    ("mov #3, x\nx: .data 0", 1, 5, "operand 1 of MOV (dst) cannot be an immediate"),
    ("jmp #3", 1, 5, "operand 1 of JMP (target) cannot be an immediate"),
    ("nop\ninc #1", 2, 5, "operand 1 of INC (ptr) cannot be an immediate"),
    ("lea x, #1\nx: .data 0", 1, 8, "operand 2 of LEA (addr) cannot be an immediate"),
    ("add x, #1, #2\nx: .data 0", 1, 12, "at most one immediate per instruction"),
    ("jmp nowhere", 1, 5, "undefined label 'nowhere'"),
    ("mov x, END\nx: .data 0", 1, 8, "an immediate value needs '#': #END"),
    ("mov x, 5\nx: .data 0", 1, 8, "an immediate value needs '#': #5"),
    ("mov x, 'a'\nx: .data 0", 1, 8, "an immediate value needs '#'"),
    ("jeq x, #0, END\nx: .data 0", 1, 12, "an immediate value needs '#': #END"),
    ("halt\np: .ptr END", 2, 9, "undefined label 'END' (END is the end marker, not a label)"),
    ("x: halt\nx: .data 1", 2, 1, "duplicate label 'x' (first defined on line 1)"),
    ("IN: halt", 1, 1, "'IN' is reserved"),
    ("  OUT: halt", 1, 3, "'OUT' is reserved"),
    ("halt\nEND: .data 1", 2, 1, "'END' is reserved"),
    ("halt\nx: .data 1\ndangling:  ; nothing follows\n", 3, 1, "label 'dangling' labels nothing"),
    ("mov x, #12\nx: .data 0", 1, 9, "value 12 is not a digit of base 10 (0..9)"),
    ("halt\nx: .data 3, 10", 2, 13, "value 10 is not a digit of base 10"),
    ("mov x, #99999999999999999999999\nx: .data 0", 1, 9, "is not a digit of base 10"),
    ("mov x, #'Z'\nx: .data 0", 1, 9, "character 'Z' is not in the alphabet"),
    ('halt\nx: .data "abZ"', 2, 10, "character 'Z' is not in the alphabet"),
    (".alphabet bytes\nmov x, #'€'\nx: .data 0", 2, 9, "not in the alphabet (bytes)"),
    ("mov x, #256\nx: .data 0", 1, 9, "value 256 is not a digit of base 10"),
    ("mov x+1000, #1\nx: .data 0", 1, 5, "'x+1000' is address 1003, outside the program"),
    ("lea p, [IN-1]\np: .data 0", 1, 9, "'IN-1' is address -1, outside the program"),
    ("halt\np: .ptr p+2", 2, 9, "'p+2' is address 5, outside the program (0..3, or 4"),
    ("", 1, 1, "no instructions"),
    ("; only data\nx: .data 1", 1, 1, "no instructions"),
    ("halt\nstart: .data 1", 2, 1, "'start' must label an instruction"),
    ("mov x, $3\nx: .data 0", 1, 8, "unexpected character '$'"),
    ("halt @", 1, 6, "unexpected character '@'"),
    ("halt\nx: .data 12ab", 2, 10, "bad number '12ab': numbers are decimal digits"),
    ("halt\n. data 1", 2, 1, "expected a directive name after '.'"),
    ('halt\ns: .string "abc', 2, 12, "unterminated string"),
    ("mov x, #'a\nx: .data 0", 1, 9, "unterminated character literal"),
    ("mov x, #'ab'\nx: .data 0", 1, 9, "a character literal holds exactly one character"),
    ("mov x, #''\nx: .data 0", 1, 9, "a character literal holds exactly one character"),
    ("mov x, #'\\q'\nx: .data 0", 1, 10, "bad escape '\\q'"),
    ("mov x, #'\\x4g'\nx: .data 0", 1, 10, "bad escape '\\x'"),
    ("mov x, #\nx: .data 0", 1, 9, "expected a value (a digit, 'c' or END), found end of line"),
    ("mov x, #end\nx: .data 0", 1, 9, "(END is upper case)"),
    ("mov [x, y\nx: .data 0", 1, 7, "expected ']' to close the '[' at column 5, found ','"),
    ("mov x+, y\nx: .data 0", 1, 7, "expected a number after '+', found ','"),
    ("mov x, y,\nx: .data 0\ny: .data 0", 1, 10, "expected an operand"),
    ("halt\n: .data 1", 2, 1, "expected a label, an instruction or a directive, found ':'"),
    ("halt extra: nop", 1, 6, "HALT takes 0 operand(s)"),
    ("halt\n.data", 2, 6, "expected a value (a digit, 'c' or END), found end of line"),
    ("halt\n.data 1,", 2, 9, "expected a value"),
    ("halt\n.data 1 2", 2, 9, "unexpected '2'"),
    ('halt\n.data ""', 2, 7, "empty string in .data"),
    ("halt\n.string 5", 2, 9, "expected a \"string\" after .string"),
    ("halt\n.space", 2, 7, "expected a slot count after .space"),
    ("halt\n.space x", 2, 8, "expected a slot count after .space, found 'x'"),
    ("halt\n.empty 0", 2, 8, ".empty needs a count of at least 1"),
    ("halt\n.space 99999999999999999999999999", 2, 8, "does not fit in memory"),
    ("halt\n.space 2, x", 2, 11, "expected a value"),
    ("halt\n.ptr", 2, 5, "expected a label, found end of line"),
    ("halt\n.ptr #1", 2, 6, "expected a label, found '#'"),
    ("halt\n.ptr x, 12\nx: .data 0", 2, 9, "value 12 is not a digit"),
    ("halt\n.frob 1", 2, 1, "unknown directive '.frob'"),
    ("halt\n.alphabet base 16", 2, 1, ".alphabet is not allowed here"),
    ("x:\n.alphabet bytes\nhalt", 2, 1, ".alphabet is not allowed here"),
    (".alphabet bytes\n.alphabet bytes\nhalt", 2, 1, "a second .alphabet"),
    (".alphabet base 1\nhalt", 1, 16, "bad base 1: must be 2..36"),
    (".alphabet base 37\nhalt", 1, 16, "bad base 37"),
    (".alphabet base\nhalt", 1, 15, "expected the base (a number) after 'base'"),
    (".alphabet hex\nhalt", 1, 11, "expected 'base N [charset \"...\"]' or 'bytes'"),
    (".alphabet base 10 charset 5\nhalt", 1, 27, "expected a \"string\" after 'charset'"),
    ('.alphabet base 10 charset "+1"\nhalt', 1, 27, "bad charset: charset characters ['1']"),
    ('.alphabet base 10 charset "++"\nhalt', 1, 27, "bad charset: charset has repeated"),
    (".alphabet bytes extra\nhalt", 1, 17, "unexpected 'extra'"),
    ("jmp 你好", 1, 5, "unexpected character '你'"),
]


@pytest.mark.parametrize("src,line,col,msg", ERRORS, ids=[e[3][:40] for e in ERRORS])
def test_errors_name_line_column_and_message(src, line, col, msg):
    with pytest.raises(AssemblyError) as info:
        assemble(src, file="t.lasm")
    e = info.value
    assert (e.file, e.line, e.col) == ("t.lasm", line, col), str(e)
    assert msg in e.message
    source_line = src.split("\n")[line - 1]
    assert e.source_line == source_line
    first, shown, caret = str(e).split("\n")
    assert first == e.short() == f"t.lasm:{line}:{col}: error: {e.message}"
    indent = len(source_line) - len(source_line.lstrip())
    assert shown == "    " + source_line[indent:]
    if source_line.isascii() and "\t" not in source_line:
        assert caret == " " * (4 + max(col - 1 - indent, 0)) + "^"


def test_error_format_matches_the_reference_example():
    src = "\n" * 11 + "        addd x, y\nx: .data 0\ny: .data 0\n"
    with pytest.raises(AssemblyError) as info:
        assemble(src, file="add.lasm")
    assert str(info.value) == ("add.lasm:12:9: error: unknown op 'ADDD'\n"
                               "    addd x, y\n"
                               "    ^")
    assert info.value.short() == "add.lasm:12:9: error: unknown op 'ADDD'"


def test_caret_expands_tabs_and_wide_characters_consistently():
    with pytest.raises(AssemblyError) as info:
        assemble("\tmov\tx,\t#12 ; ok\nx: .data 0")
    e = info.value
    assert (e.line, e.col) == (1, 10)
    _, shown, caret = str(e).split("\n")
    assert shown == "    " + "mov     x,      #12 ; ok"  # indentation dropped
    assert caret.index("^") == shown.index("#12") + 1  # under the '1' of 12
    with pytest.raises(AssemblyError) as info:
        assemble('.alphabet base 10 charset "你"\nhalt ; 你好\nx: .data \'你\', 12')
    _, shown, caret = str(info.value).split("\n")
    assert info.value.col == 15 and shown == "    x: .data '你', 12"
    assert caret.index("^") == 4 + 15  # 你 takes two cells: the caret moves one further


def test_crlf_line_endings_are_accepted():
    p = assemble("start: halt\r\nx: .data 1\r\n")
    assert p.symbols["x"] == 3 and p.source_map[3].text == "x: .data 1"
    with pytest.raises(AssemblyError) as info:
        assemble("halt\r\n  bogus\r\n")
    assert info.value.source_line == "  bogus" and info.value.col == 3


# ---------------------------------------------------------------------- fuzzing

def _check_error_position(text: str, e: AssemblyError) -> None:
    lines = text.split("\n")
    assert 1 <= e.line <= len(lines), e.line
    line = lines[e.line - 1]
    line = line[:-1] if line.endswith("\r") else line
    assert e.source_line == line
    assert 1 <= e.col <= len(line) + 1, (e.col, line)
    assert len(str(e).split("\n")) == 3 and e.short().startswith(f"{e.file}:{e.line}:{e.col}:")


def _assemble_or_error(text: str) -> Program | None:
    try:
        return assemble(text, file="fuzz.lasm")
    except AssemblyError as e:
        _check_error_position(text, e)
        return None


@FUZZ
@given(st.text())
def test_arbitrary_text_raises_only_assembly_errors(text):
    _assemble_or_error(text)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("#[],:'\"\\;+-.\n\t x0129END_abmovhalt"))))
def test_token_soup_raises_only_assembly_errors(text):
    _assemble_or_error(text)


_SEEDS = [f.read_text() for f in PROGRAM_FILES]


@FUZZ
@given(mutated(st.one_of(programs(max_instructions=10), st.sampled_from(_SEEDS or [ECHO]))))
def test_mutated_programs_raise_only_assembly_errors(text):
    _assemble_or_error(text)


@settings(max_examples=100, derandomize=True, deadline=None, database=None)
@given(lasm_texts(_SEEDS))
def test_lasm_texts_strategy_raises_only_assembly_errors(text):
    _assemble_or_error(text)


# ------------------------------------------------------------------ round trips

@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(programs())
def test_disassemble_round_trips_random_programs(text):
    p = assemble(text)
    assert assemble(disassemble(p)) == p


@pytest.mark.parametrize("path", PROGRAM_FILES, ids=[f.name for f in PROGRAM_FILES])
def test_disassemble_round_trips_program_files(path):
    p = assemble(path.read_text(), file=str(path))
    text = disassemble(p)
    assert assemble(text) == p
    assert disassemble(assemble(text)) == text  # a fixed point after one trip


def test_disassembly_uses_labels_offsets_and_alphabet():
    src = ".alphabet base 16\nstart: mov xs+2, #'+'\n jmp [p]\n halt\nxs: .data 1, 2, 3\n" \
          "p: .ptr xs+1\n.empty 3\n"
    text = disassemble(assemble(src))
    assert text.splitlines()[0] == ".alphabet base 16"
    assert "mov   xs+2, #'+'" in text and ".ptr  xs+1" in text and ".empty 3" in text
    assert assemble(text) == assemble(src)


def test_disassembly_of_a_program_without_symbols_adds_auto_labels():
    body = (Slot.instr(Op.MOV, ((D, 5), (D, 6))), Slot.instr(Op.JMP, ((D, 4),)),
            Slot.instr(Op.HALT), Slot.data(3), Slot.data(4, 7))
    p = Program(slots=PORTS + body, entry=3)
    text = disassemble(p)
    assert "L5:" in text and "L4:" in text and ".ptr  L6+1" in text and "start:" in text
    q = assemble(text)
    assert q.slots == p.slots and q.entry == 3 and q.symbols["L5"] == 5


@pytest.mark.parametrize("slot,what", [
    (Slot(Kind.WEIGHTS, table=(0,) * 3), "WEIGHTS slot needs a table of 55"),
    (Slot(Kind.WEIGHTS, val=1, table=(0,) * 55), "WEIGHTS slot needs"),
    (Slot.instr(Op.INC, ((D, 2), (D, 3))), "unused fields"),
    (Slot(Kind.INSTR, Op.HALT, (Mode.NONE,) * 4, (0,) * 4, 5), "no immediate"),
    (Slot.instr(Op.MOV, ((M, 0), (D, 2))), "cannot have mode IMMEDIATE"),
    (Slot.instr(Op.ADD, ((D, 2), (M, 0), (M, 0))), "at most one immediate"),
    (Slot.instr(Op.JMP, ((D, 99),)), "address 99 is outside"),
    (Slot.data(99), "outside the alphabet"),
    (Slot(Kind.EMPTY, val=1), "EMPTY slot with fields set"),
])
def test_disassemble_rejects_what_the_syntax_cannot_express(slot, what):
    p = Program(slots=PORTS + (Slot.instr(Op.HALT), slot), entry=2,
                symbols={"IN": 0, "OUT": 1})
    with pytest.raises(ValueError, match="slot 3") as info:
        disassemble(p)
    assert what in str(info.value)


@st.composite
def built_programs(draw):
    """Programs built slot by slot (as a model might emit them): mostly valid instructions
    and data, some raw slots with arbitrary fields, with or without a symbol table."""
    n = draw(st.integers(3, 10))
    addr, val = st.integers(0, n), st.integers(0, 56)

    def slot():
        kind = draw(st.sampled_from(["instr", "instr", "data", "empty", "raw"]))
        if kind == "empty":
            return Slot()
        if kind == "data":
            return Slot.data(draw(val), draw(addr))
        if kind == "raw":
            return Slot(Kind(draw(st.integers(0, 3))), Op(draw(st.integers(0, 25))),
                        tuple(Mode(draw(st.integers(0, 3))) for _ in range(4)),
                        tuple(draw(addr) for _ in range(4)), draw(val))
        op = draw(st.sampled_from(list(Op)))
        operands, imm = [], False
        for role in SPEC[op].roles:
            m = draw(st.sampled_from(sorted(role.modes - ({M} if imm else set()))))
            imm = imm or m == M
            operands.append((m, draw(addr)))
        return Slot.instr(op, tuple(operands), draw(st.integers(0, 54)) if imm else 0)

    symbols = dict(draw(st.sampled_from([{}, {"IN": 0, "OUT": 1}])))
    for _ in range(draw(st.integers(0, 2))):
        symbols[draw(st.sampled_from(["a", "start", "L3"]))] = draw(st.integers(2, n - 1))
    alphabet = draw(st.sampled_from([DEFAULT_ALPHABET, Alphabet.numeric(16),
                                     Alphabet(10, "\n\x00'\"+")]))
    return Program(slots=PORTS + tuple(slot() for _ in range(n - 2)),
                   entry=draw(st.integers(2, n - 1)), alphabet=alphabet, symbols=symbols)


@settings(max_examples=400, derandomize=True, deadline=None, database=None)
@given(built_programs())
def test_disassemble_says_exactly_the_slots_or_raises_value_error(p):
    try:
        text = disassemble(p)
    except ValueError as e:
        assert "slot" in str(e) or "instruction" in str(e)
        return
    q = assemble(text)  # never an AssemblyError: what disassemble prints, assemble reads
    assert (q.slots, q.entry, q.alphabet) == (p.slots, p.entry, p.alphabet), text
    if "IN" in p.symbols:  # with the ports' symbols, the whole Program comes back
        assert q == p


def test_apply_wset_and_weights_assemble_and_round_trip():
    p = assemble('apply d, w, #3\nwset [q], d, #\'x\'\nhalt\nd: .data 0\n'
                 'w: .weights "0123" -> "a1?0"\nq: .ptr w\n')
    assert p.slots[2] == Slot.instr(Op.APPLY, ((D, 5), (D, 6), (M, 0)), imm=3)
    assert p.slots[3] == Slot.instr(Op.WSET, ((I, 7), (D, 5), (M, 0)),
                                    imm=DEFAULT_ALPHABET.encode_char("x"))
    w = p.slots[6]
    enc = DEFAULT_ALPHABET.encode_char
    assert w.kind == Kind.WEIGHTS and len(w.table) == DEFAULT_ALPHABET.size
    assert w.table[:5] == (enc("a"), 1, enc("?"), 0, DEFAULT_ALPHABET.end)
    assert assemble(disassemble(p)) == p
    empty = assemble('halt\nf: .weights "" -> ""\n').slots[3]
    assert empty == Slot(Kind.WEIGHTS) == Slot.weights([DEFAULT_ALPHABET.end] * 55)


@pytest.mark.parametrize("src,col,msg", [
    ('f: .weights "012" -> "01"', 22, "maps 3 input(s) to 2 output(s)"),
    ('f: .weights "010" -> "123"', 13, "input '0' is listed twice"),
    ('f: .weights "01" "10"', 18, "expected '->'"),
    ('f: .weights "0\u00e9" -> "12"', 13, "not in the alphabet"),
    ('f: .weights 0 -> 1', 13, "a \"string\" of inputs"),
    ('f: .weights "0" -> "1" x', 24, "unexpected 'x'"),
])
def test_bad_weights_literals_name_file_line_and_column(src, col, msg):
    with pytest.raises(AssemblyError) as info:
        assemble("halt\n" + src, file="w.lasm")
    e = info.value
    assert (e.file, e.line, e.col) == ("w.lasm", 2, col), str(e)
    assert msg in str(e)


# ------------------------------------------------------------- the strategy

def test_programs_cover_every_op_and_every_mode():
    ops, modes = set(), set()

    @settings(max_examples=150, derandomize=True, deadline=None, database=None)
    @given(programs())
    def collect(text):
        for s in assemble(text).slots:
            if s.kind == Kind.INSTR:
                ops.add(s.op)
                modes.update((r, m) for r, m in zip(SPEC[s.op].roles, s.modes))

    collect()
    assert ops == set(Op)
    assert modes == {(r, m) for spec in SPEC.values() for r in spec.roles for m in r.modes}


@pytest.mark.skipif(not HAS_INTERP, reason="llamacpu.core.interp is not written yet")
@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(programs(), inputs())
def test_random_programs_halt_without_fault(text, input_text):
    from llamacpu.core.interp import run

    p = assemble(text)
    r = run(p, input_text, max_steps=BUDGET.steps)  # raises MachineFault on any fault
    assert r.halted and 1 <= r.steps <= BUDGET.steps


@pytest.mark.skipif(not HAS_GRAPH, reason="llamacpu.core.graph is not written yet")
@settings(max_examples=100, derandomize=True, deadline=None, database=None)
@given(programs())
def test_random_programs_pass_validation(text):
    from llamacpu.core.graph import validate

    errors = [d for d in validate(assemble(text)) if d.severity == "error"]
    assert not errors, "\n".join(map(str, errors))


@pytest.mark.parametrize("max_instructions", [0, 3])
def test_programs_respect_max_instructions(max_instructions):
    @settings(max_examples=50, derandomize=True, deadline=None, database=None)
    @given(programs(max_instructions=max_instructions))
    def check(text):
        p = assemble(text)
        n_instr = sum(s.kind == Kind.INSTR for s in p.slots)
        n_subs = sum(name in p.symbols for name in ("s0", "s1", "s2"))
        frame = 2 + 1 + 2 * n_subs  # prologue, HALT, and a CALL + RET per subroutine
        assert n_instr <= frame + max_instructions

    check()


# ------------------------------------------------------------------------- CLI

def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llamacpu.asm", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_cli_prints_a_disassembly_that_reassembles(tmp_path):
    (tmp_path / "echo.lasm").write_text(ECHO)
    r = _cli("echo.lasm", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert assemble(r.stdout) == assemble(ECHO)
    assert "Traceback" not in r.stderr


def test_cli_reports_assembly_errors_in_three_lines(tmp_path):
    (tmp_path / "bad.lasm").write_text("halt\n  addd x\n")
    r = _cli("bad.lasm", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == ["bad.lasm:2:3: error: unknown op 'ADDD'",
                                     "    addd x", "    ^"]


@pytest.mark.parametrize("args,fragment", [
    (["missing.lasm"], "error: cannot read missing.lasm"),
    (["big.lasm", "--memory-size", "3"], "does not fit in memory"),
    (["big.lasm", "--memory-size", "two"], "not an integer"),
    ([], "the following arguments are required"),
])
def test_cli_bad_input_exits_2_without_traceback(tmp_path, args, fragment):
    (tmp_path / "big.lasm").write_text("nop\nhalt\n")
    r = _cli(*args, cwd=tmp_path)
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr


def test_cli_skips_validation_when_graph_is_absent(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "llamacpu.core.graph", None)  # import raises ModuleNotFound
    (tmp_path / "falls.lasm").write_text("start: nop\nx: .data 1\n")  # graph would reject
    assert asm_main([str(tmp_path / "falls.lasm")]) == 0
    assert assemble(capsys.readouterr().out) == assemble("start: nop\nx: .data 1\n")


@pytest.mark.skipif(not HAS_GRAPH, reason="llamacpu.core.graph is not written yet")
def test_cli_validation_errors_exit_2_and_warnings_do_not(tmp_path):
    (tmp_path / "falls.lasm").write_text("start: nop\nx: .data 1\n")
    r = _cli("falls.lasm", cwd=tmp_path)
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "dead.lasm").write_text("halt\nnop\nhalt\n")
    r = _cli("dead.lasm", cwd=tmp_path)
    assert r.returncode == 0 and "warning:" in r.stderr and "unreachable" in r.stderr
