"""The reference interpreter (llamacpu.core.interp) and the run CLI (llamacpu.run).

Every behavioural test runs both implementations in interp: the translated fast path
(``trace=False``) and the readable ``transition`` path (``trace=True``), and checks they
agree; a hypothesis test compares them (and ``step``) on random programs, self-modifying
code included.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamacpu.core.asm import assemble
from llamacpu.core.golden import PROGRAMS_DIR
from llamacpu.core.interp import (
    MachineFault,
    Result,
    State,
    StepFault,
    TraceStep,
    load,
    run,
    step,
    transition,
)
from llamacpu.core.isa import (
    N_PORTS,
    OPS,
    SPEC,
    Alphabet,
    InputError,
    Kind,
    Mode,
    Op,
    Program,
    Role,
    Slot,
    memory_image,
)

D, I, M = Mode.DIRECT, Mode.INDIRECT, Mode.IMMEDIATE
ALPHA = Alphabet.numeric(10)
END = ALPHA.end
PLUS = ALPHA.encode_char("+")


def asm(src: str) -> Program:
    return assemble(textwrap.dedent(src), file="t.lasm")


def both(program: Program, input_text: str = "", **kw) -> Result:
    """Run on the fast and the traced path; check they agree; return the fast result."""
    fast = run(program, input_text, **kw)
    slow = run(program, input_text, trace=True, **kw)
    assert fast.trace is None and slow.trace is not None and len(slow.trace) == slow.steps
    for f in ("output", "symbols", "steps", "halted", "memory", "carry", "image"):
        assert getattr(fast, f) == getattr(slow, f), f
    return fast


def fault(program: Program, input_text: str = "", **kw) -> MachineFault:
    """Run on both paths; check both fault the same way; return the fault."""
    with pytest.raises(MachineFault) as fast:
        run(program, input_text, **kw)
    with pytest.raises(MachineFault) as slow:
        run(program, input_text, trace=True, **kw)
    f, s = fast.value, slow.value
    assert (f.pc, f.step, f.reason, f.location, str(f)) == (s.pc, s.step, s.reason,
                                                            s.location, str(s))
    assert s.trace is not None and len(s.trace) == s.step
    return f


def hand(*code: Slot, data: tuple[Slot, ...] = ()) -> Program:
    """A program from slots: ports, code from address 2, then data."""
    return Program(slots=(Slot.data(), Slot.data()) + code + data, entry=N_PORTS)


# ---------------------------------------------------------------------------- arithmetic

TABLE = """
    .alphabet base {base}
    start:  lea  p, [IN]
            mov  a, [p]
            inc  p
            mov  b, [p]
            inc  p
            setc [p]
            {op} d, a, b
            getc c
            lea  o, [OUT]
            mov  [o], d
            inc  o
            mov  [o], c
            halt
    p: .ptr IN
    o: .ptr IN
    a: .data 0
    b: .data 0
    c: .data 0
    d: .data 0
"""


def expected(op: Op, a: int, b: int, c: int, base: int) -> tuple[int, int] | str:
    """(d, C) after ``op d, a, b`` with carry c, by Python's formulas; or a fault reason."""
    if op == Op.ADD:
        return (a + b + c) % base, (a + b + c) // base
    if op == Op.SUB:
        return (a - b - c) % base, int(a - b - c < 0)
    if op == Op.MUL:
        return (a * b + c) % base, (a * b + c) // base
    if b == 0:
        return f"{op.name} by zero"
    if op == Op.MOD:
        return a % b, c
    q, r = divmod(c * base + a, b)
    return (q, r) if q < base else f"DIV quotient {q}"


def check_table(op: Op, base: int, triples) -> None:
    alpha = Alphabet.numeric(base)
    program = asm(TABLE.format(op=op.name.lower(), base=base))
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    for a, b, c in triples:
        text = digits[a] + digits[b] + digits[c]
        want = expected(op, a, b, c, base)
        if isinstance(want, str):
            f = fault(program, text, out_size=2)
            assert f.reason.startswith(want)
            assert (f.pc, f.location) == (8, f"t.lasm:9:9: {op.name.lower()} d, a, b")
        else:
            r = both(program, text, out_size=2)
            assert r.symbols == want, (op, a, b, c)
            assert alpha.encode(r.output) == list(want)


@pytest.mark.parametrize("op", [Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MOD])
def test_arithmetic_tables_base10_every_digit_triple(op):
    check_table(op, 10, itertools.product(range(10), repeat=3))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.data())
def test_arithmetic_tables_other_bases(data):
    base = data.draw(st.sampled_from([2, 3, 7, 16, 36]))
    op = data.draw(st.sampled_from([Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MOD]))
    digit = st.integers(0, base - 1)
    check_table(op, base, [(data.draw(digit), data.draw(digit), data.draw(digit))])


def test_add_chain_carries_between_digits():
    # 99 + 1 digit by digit, least significant first: 9+1 = 0 carry 1, 9+0+1 = 0 carry 1.
    p = asm("""
        start: add d0, n0, #1
               add d1, n1, #0
               getc d2
               lea OUT, d2
               halt
        n0: .data 9
        n1: .data 9
        d0: .data 0
        d1: .data 0
        d2: .data 0
        e:  .data END
    """)
    r = both(p)
    assert r.output == "1" and r.carry == 1
    assert [r.memory[p.symbols[k]].val for k in ("d0", "d1", "d2")] == [0, 0, 1]


def test_sub_borrow_and_long_division():
    # 100 - 1 = 99 (two borrows), and 75 / 4 by long division: 1 r 3, then 18 r 3.
    p = asm("""
        start: sub d0, #0, one
               sub d1, #0, zero
               sub d2, #1, zero
               getc b
               setc #0
               div q0, #7, four
               div q1, #5, four
               getc r
               halt
        one:  .data 1
        zero: .data 0
        four: .data 4
        d0: .data 0
        d1: .data 0
        d2: .data 0
        b:  .data 5
        q0: .data 0
        q1: .data 0
        r:  .data 0
    """)
    r = both(p)
    got = {k: r.memory[p.symbols[k]].val for k in ("d0", "d1", "d2", "b", "q0", "q1", "r")}
    assert got == {"d0": 9, "d1": 9, "d2": 0, "b": 0, "q0": 1, "q1": 8, "r": 3}


def test_compares_work_on_every_symbol():
    p = asm("""
        start: setc #7
               mod  m, eight, #3
               eq   e, plus, #'+'
               eq   ne, plus, #'-'
               lt   l, nine, #'+'
               lt   nl, plus, #9
               min  lo, a, #3
               max  hi, a, #3
               peq  pe, p, q
               peq  pn, p, r
               halt
        eight: .data 8
        plus: .data '+'
        nine: .data 9
        a: .data 'a'
        p: .ptr IN
        q: .ptr IN
        r: .ptr OUT
        m: .data 0
        e: .data 0
        ne: .data 5
        l: .data 0
        nl: .data 5
        lo: .data 0
        hi: .data 0
        pe: .data 0
        pn: .data 5
    """)
    r = both(p)
    got = {k: r.memory[p.symbols[k]].val for k in ("m", "e", "ne", "l", "nl", "lo", "hi",
                                                    "pe", "pn")}
    assert got == {"m": 2, "e": 1, "ne": 0, "l": 1, "nl": 0, "lo": 3,
                   "hi": ALPHA.encode_char("a"), "pe": 1, "pn": 0}
    assert r.carry == 7


def test_getc_setc():
    p = asm("""
        start: setc #8
               getc c
               halt
        c: .data 0
    """)
    r = both(p)
    assert r.carry == 8 and r.memory[p.symbols["c"]].val == 8


# ---------------------------------------------------------------------------- moves, pointers


def test_mov_immediate_sets_val_only_and_mov_copies_every_field():
    p = asm("""
        start: mov  a, #'x'
               mov  b, ptr
               mov  c, code
               halt
        a:    .ptr IN, 3
        b:    .data 0
        c:    .data 0
        ptr:  .ptr OUT, 'q'
        code: jmp start
    """)
    r = both(p)
    s = p.symbols
    assert r.memory[s["a"]] == Slot.data(ALPHA.encode_char("x"), ptr=0)
    assert r.memory[s["b"]] == Slot.data(ALPHA.encode_char("q"), ptr=1)
    assert r.memory[s["c"]] == p.slots[s["code"]] and r.memory[s["c"]].kind == Kind.INSTR


def test_lea_inc_dec_and_indirect_operands():
    p = asm("""
        start: lea  p, xs          ; p -> xs[0]
               inc  p              ; p -> xs[1]
               lea  q, [p]         ; q = p
               inc  q              ; q -> xs[2]
               add  [q], [p], #1   ; xs[2] = xs[1] + 1
               dec  p              ; p -> xs[0]
               mov  [p], [q]       ; xs[0] = xs[2]
               halt
        p:  .ptr IN
        q:  .ptr IN
        xs: .data 4, 5, 0
    """)
    r = both(p)
    xs = p.symbols["xs"]
    assert [r.memory[xs + i].val for i in range(3)] == [6, 5, 6]
    assert r.memory[p.symbols["p"]].ptr == xs and r.memory[p.symbols["q"]].ptr == xs + 2


def test_jumps_taken_and_not_taken():
    p = asm("""
        start: jz   one, bad
               jz   zero, ok1
               jmp  bad
        ok1:   jnz  zero, bad
               jnz  one, ok2
               jmp  bad
        ok2:   jeq  one, zero, bad
               jeq  one, #1, ok3
               jmp  bad
        ok3:   jne  one, #1, bad
               jne  one, zero, ok4
               jmp  bad
        ok4:   lea  t, ok5
               jmp  [t]
               jmp  bad
        ok5:   mov  r, #7
               halt
        bad:   mov  r, #0
               halt
        one:  .data 1
        zero: .data 0
        t:    .ptr IN
        r:    .data 5
    """)
    r = both(p)
    assert r.memory[p.symbols["r"]].val == 7 and r.steps == 12


def test_call_ret_nested():
    p = asm("""
        start: call inc2
               call inc2
               halt
        inc2:  call inc1
               call inc1
               ret
        inc1:  add  n, n, #1
               ret
        n: .data 0
    """)
    r = both(p, stack_size=2)
    assert r.memory[p.symbols["n"]].val == 4
    assert r.steps == 3 + 2 * (3 + 2 * 2)


def test_self_modifying_code_is_retranslated():
    # The loop body `add n, n, #1` runs, then the program rewrites its immediate to 3
    # (mov writes the instruction's val) and its destination (inc writes its p0) so that
    # it becomes `add m, n, #3`, and runs it again: the fast path must not keep the stale
    # translation.
    p = asm("""
        start: lea  i, body
        loop:
        body:  add  n, n, #1
               jnz  done, fin
               mov  body, #3
               inc  body           ; body's p0, the destination: n -> m
               mov  done, #1
               jmp  loop
        fin:   halt
        i:    .ptr IN
        done: .data 0
        n:    .data 0
        m:    .data 0
    """)
    r = both(p)
    s = p.symbols
    assert r.memory[s["n"]].val == 1 and r.memory[s["m"]].val == 1 + 3  # m <- n + 3
    assert r.memory[s["body"]].args[0] == s["m"] and r.memory[s["body"]].val == 3


def test_mov_copies_an_instruction_over_another():
    p = asm("""
        start: mov  slot, stop
               mov  n, #1
        slot:  mov  n, #2          ; replaced by a halt before it runs
               mov  n, #3
               halt
        stop:  halt
        n: .data 0
    """)
    r = both(p)
    assert r.memory[p.symbols["n"]].val == 1 and r.steps == 3
    assert r.memory[p.symbols["slot"]] == Slot.instr(Op.HALT)


def test_writes_turn_empty_slots_into_data_and_mov_copies_emptiness():
    p = asm("""
        start: mov  e0, #3
               inc  e1
               mov  d, e2
               halt
        e0: .empty 1
        e1: .empty 1
        e2: .empty 1
        d:  .data 4
    """)
    r = both(p)
    s = p.symbols
    assert r.memory[s["e0"]] == Slot(Kind.DATA, val=3)
    assert r.memory[s["e1"]] == Slot(Kind.DATA, args=(1, 0, 0, 0))
    assert r.memory[s["d"]] == Slot()  # EMPTY, copied
    assert r.memory[s["e2"]].kind == Kind.EMPTY


# ---------------------------------------------------------------------------- output


def test_output_streams_through_a_copy_of_out():
    p = asm("""
        start: lea  p, [IN]
               lea  o, [OUT]
        loop:  jeq  [p], #END, done
               mov  [o], [p]
               inc  o
               inc  p
               jmp  loop
        done:  halt
        p: .ptr IN
        o: .ptr IN
    """)
    r = both(p, "a+1")
    assert r.output == "a+1" and r.symbols == (10 + 18, PLUS, 1)
    assert r.image == memory_image(p, "a+1")


def test_output_from_moving_out_and_up_to_end_of_memory():
    p = asm("""
        start: lea  OUT, msg
               halt
        msg: .string "hi"
    """)
    assert both(p).output == "hi"
    q = asm("""
        start: lea  o, [OUT]
               mov  [o], #7        ; the only output slot: no END after it
               halt
        o: .ptr IN
    """)
    r = both(q, "", out_size=1)
    assert r.output == "7" and len(r.memory) == q.symbols["o"] + 1 + 1 + 1


def test_an_answer_outside_the_alphabet_faults():
    for v in (-1, 55):  # only a hand-built image can hold such a value
        p = hand(Slot.instr(Op.LEA, ((D, 1), (D, 4))), Slot.instr(Op.HALT),
                 data=(Slot.data(v),))
        f = fault(p, out_size=1)
        assert (f.pc, f.step) == (3, 2) and f.reason == (
            f"the answer holds symbol {v}, outside the alphabet 0..54")


def test_empty_answer_and_halt_counts_as_a_step():
    r = both(hand(Slot.instr(Op.HALT)))
    assert (r.output, r.symbols, r.steps, r.halted, r.carry) == ("", (), 1, True, 0)


# ---------------------------------------------------------------------------- step limit


LOOP = """
    start: add n, n, #1
           jmp start
    n: .data 0
"""


def test_step_limit_raises_or_stops():
    p = asm(LOOP)
    f = fault(p, max_steps=11)
    assert (f.step, f.pc) == (11, p.entry + 1) and "step limit of 11" in f.reason
    r = both(p, max_steps=11, on_limit="stop")
    assert (r.halted, r.steps, r.memory[p.symbols["n"]].val, r.carry) == (False, 11, 6, 0)
    r0 = both(p, max_steps=0, on_limit="stop")
    assert r0.steps == 0 and r0.memory == r0.image.slots


def test_zero_steps_run_nothing_not_even_the_entry_check():
    nowhere = Program(slots=(Slot.data(), Slot.data()), entry=9)
    r = both(nowhere, max_steps=0, on_limit="stop")
    assert (r.steps, r.halted, r.memory) == (0, False, r.image.slots)
    assert fault(nowhere, max_steps=0).reason == "step limit of 0 reached without HALT"
    # The limit comes before the fault the next step would raise.
    nop = hand(Slot.instr(Op.NOP))
    assert both(nop, max_steps=1, on_limit="stop").steps == 1
    assert fault(nop, max_steps=2).reason == "slot 3 is not an instruction (DATA)"


def test_long_straight_line_code_under_every_step_limit():
    # 40 instructions in a row (longer than any translated block), cut at every limit.
    p = asm("start:" + "".join("\n add n, n, #1" for _ in range(40)) + "\n halt\nn: .data 0")
    for limit in range(0, 43):
        r = both(p, max_steps=limit, on_limit="stop")
        v, c = 0, 0
        for _ in range(min(limit, 40)):
            v, c = (v + 1 + c) % 10, (v + 1 + c) // 10
        assert (r.steps, r.halted) == (min(limit, 41), limit >= 41)
        assert (r.memory[p.symbols["n"]].val, r.carry) == (v, c)


def test_halt_on_the_last_allowed_step_is_a_halt():
    p = asm("""
        start: nop
               nop
               halt
    """)
    assert both(p, max_steps=3).halted
    assert fault(p, max_steps=2).step == 2


def test_bad_arguments():
    p = asm(LOOP)
    with pytest.raises(ValueError):
        run(p, "", on_limit="ignore")
    with pytest.raises(ValueError):
        run(p, "", max_steps=-1)
    with pytest.raises(InputError):
        run(p, "A")


# ---------------------------------------------------------------------------- faults


def test_fault_message_and_location():
    p = asm("""
        start: mov  x, #1
               add  x, x, plus
               halt
        x:    .data 0
        plus: .data '+'
    """)
    f = fault(p)
    assert (f.pc, f.step) == (3, 1)
    assert f.location == "t.lasm:3:8: add  x, x, plus"
    assert f.reason == f"ADD operand 3 is {PLUS}, not a digit of base 10"
    assert str(f) == f"fault at pc 3 (t.lasm:3:8: add  x, x, plus), step 1: {f.reason}"


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "mod"])
def test_arithmetic_faults_on_non_digits(op):
    p = asm(f"""
        start: {op} d, c, #1
               halt
        c: .data 'c'
        d: .data 0
    """)
    assert fault(p).reason.startswith(f"{op.upper()} operand 2 is")
    q = asm(f"""
        start: {op} d, #1, c
               halt
        c: .data END
        d: .data 0
    """)
    assert fault(q).reason == f"{op.upper()} operand 3 is {END}, not a digit of base 10"


def test_setc_non_digit_and_division_faults():
    assert "SETC operand 1" in fault(asm("start: setc #'x'\n halt")).reason
    assert fault(asm("start: div d, #1, z\n halt\nz: .data 0\nd: .data 0")).reason == \
        "DIV by zero"
    assert fault(asm("start: mod d, #1, z\n halt\nz: .data 0\nd: .data 0")).reason == \
        "MOD by zero"
    f = fault(asm("start: setc #5\n div d, #0, one\n halt\none: .data 1\nd: .data 0"))
    assert f.step == 1 and f.reason.startswith("DIV quotient 50 ")


def test_address_faults():
    n = 2 + 2 + 1 + 1  # program, input END, one output slot
    direct = hand(Slot.instr(Op.MOV, ((D, 9999), (M, 0))), Slot.instr(Op.HALT))
    f = fault(direct, out_size=1)
    assert (f.pc, f.step, f.reason) == (2, 0, f"address 9999 outside memory of {n} slots")
    assert f.location == "<program>: slot 2"
    # A pointer outside memory (only a hand-built image holds one): the run takes the
    # readable path; [p] faults when used.
    bad_ptr = hand(Slot.instr(Op.NOP), Slot.instr(Op.ADD, ((D, 0), (I, 4), (M, 1))),
                   data=(Slot.data(0, ptr=-3),))
    f = fault(bad_ptr, out_size=1)
    assert (f.pc, f.step, f.reason) == (3, 1, "address -3 outside memory of 7 slots")
    # Targets are addresses too, checked even when the jump is not taken.
    jump = hand(Slot.instr(Op.JZ, ((M, 0), (D, 50)), imm=1), Slot.instr(Op.HALT))
    assert fault(jump, out_size=1).reason == f"address 50 outside memory of {n} slots"


def test_pointer_moves_out_of_memory():
    p = asm("""
        start: dec  p
               halt
        p: .ptr IN
    """)
    f = fault(p)
    n = len(memory_image(p, "").slots)
    assert f.reason == f"DEC moves the pointer at 4 to -1, outside memory of {n} slots"
    q = asm("""
        start: lea  p, [OUT]
        loop:  inc  p
               jmp  loop
        p: .ptr IN
    """)
    f = fault(q, out_size=3)
    n = len(memory_image(q, "", 3).slots)
    assert f.reason == f"INC moves the pointer at 5 to {n}, outside memory of {n} slots"
    assert f.step == 1 + 2 * 2 and f.pc == 3


def test_executing_data_and_running_off_memory():
    p = asm("""
        start: jmp  x
        x: .data 1
    """)
    f = fault(p)
    assert (f.pc, f.step, f.reason) == (3, 1, "slot 3 is not an instruction (DATA)")
    # Copy a NOP into the last slot of memory and jump to it: pc runs off the end.
    q = asm("""
        start: mov  [OUT], nop
               jmp  [OUT]
        nop:   nop
    """)
    n = len(memory_image(q, "", 1).slots)
    f = fault(q, out_size=1)
    assert (f.pc, f.step, f.reason) == (n, 3, f"pc {n} outside memory of {n} slots")
    entry = Program(slots=(Slot.data(), Slot.data()), entry=9)
    assert fault(entry, out_size=1).reason == "pc 9 outside memory of 4 slots"


def test_invalid_instructions_fault():
    bad_mode = hand(Slot.instr(Op.INC, ((M, 0),)))
    assert fault(bad_mode).reason == "INC operand 1 (ptr) cannot have mode IMMEDIATE"
    apply = hand(Slot.instr(Op.APPLY, ((D, 3), (D, 3), (M, 0))))
    assert fault(apply).reason == "APPLY operand 2 is not a WEIGHTS slot (DATA)"


def test_stack_overflow_and_underflow():
    p = asm("""
        start: call start
    """)
    f = fault(p, stack_size=4)
    assert (f.step, f.reason) == (4, "return stack overflow (4 entries)")
    assert fault(asm("start: ret")).reason == "return stack underflow (RET with no CALL)"


def test_machine_fault_pickles():
    import pickle

    f = fault(asm("start: ret"))
    g = pickle.loads(pickle.dumps(f))
    assert (g.pc, g.step, g.reason, g.location, str(g)) == (f.pc, f.step, f.reason,
                                                            f.location, str(f))


# ---------------------------------------------------------------------------- the trace


def test_trace_contents():
    p = asm("""
        start: lea  p, [IN]
               add  [p], [p], #5
               mov  x, [p]
               jne  x, #7, start
               halt
        p: .ptr OUT
        x: .data 0
    """)
    r = run(p, "2", trace=True)
    s, n_in = p.symbols, len(p.slots)
    assert r.trace[:2] == (
        TraceStep(0, 2, Op.LEA, (s["p"], n_in), (1, n_in), 0, 0, n_in, s["p"],
                  Slot.data(0, ptr=n_in), 3),
        TraceStep(1, 3, Op.ADD, (n_in, n_in, None), (None, 2, 5), 0, 0, 7, n_in,
                  Slot.data(7), 4),
    )
    mov, jne, halt = r.trace[2:]
    assert (mov.addrs, mov.values, mov.result, mov.write_addr) == ((s["x"], n_in),
                                                                   (None, 7), 7, s["x"])
    assert mov.written == Slot.data(7)
    assert (jne.addrs, jne.values, jne.next_pc, jne.write_addr) == ((s["x"], None, 2),
                                                                    (7, 7, 2), 6, None)
    assert (halt.op, halt.next_pc, halt.result, halt.written) == (Op.HALT, 6, None, None)
    assert r.output == ""  # OUT still points at the output region's END


def test_step_api_matches_the_trace():
    p = asm("""
        start: call f
               add  n, n, #9
               add  n, n, #9
               halt
        f:     inc  q
               ret
        n: .data 0
        q: .ptr IN
    """)
    r = run(p, "12", trace=True)
    state = load(p, "12")
    assert state == State(r.image.slots, p.entry)
    steps = []
    while not state.halted:
        state, t = step(p, state)
        steps.append(t)
    assert tuple(steps) == r.trace
    assert (state.memory, state.carry, state.steps, state.stack) == (r.memory, r.carry,
                                                                     r.steps, ())
    with pytest.raises(ValueError):
        step(p, state)
    ret = asm("start: ret")
    with pytest.raises(MachineFault):
        step(ret, load(ret, ""))


def test_transition_is_pure_and_raises_step_fault():
    p = asm(LOOP)
    memory = list(memory_image(p, "").slots)
    before = list(memory)
    t = transition(memory, p.entry, 0, [], ALPHA)
    assert memory == before and t.written == Slot.data(1) and t.next_pc == p.entry + 1
    with pytest.raises(StepFault, match="underflow"):
        transition(load(asm("start: ret"), "").memory, 2, 0, [], ALPHA)


# ---------------------------------------------------------------------------- differential


@st.composite
def machines(draw):
    """A random hand-built program and input: valid modes; addresses mostly in the program
    (so writes often land on code), targets mostly code; now and then one out of memory."""
    text = draw(st.text("0123456789+-a", max_size=4))
    n_code = draw(st.integers(1, 10))
    n_data = draw(st.integers(0, 5))
    n_prog = N_PORTS + n_code + n_data
    out_size = draw(st.integers(1, 4))
    n = n_prog + len(text) + 1 + out_size

    def pick(*choices):  # (weight, strategy) pairs
        i = draw(st.integers(0, sum(w for w, _ in choices) - 1))
        for w, s in choices:
            if i < w:
                return draw(s)
            i -= w

    def address(role: Role) -> int:
        bad = (1, st.sampled_from([n, n + 5]))
        if role == Role.TARGET:
            return pick((30, st.integers(N_PORTS, N_PORTS + n_code - 1)),
                        (2, st.integers(0, n - 1)), bad)
        return pick((20, st.integers(0, n_prog - 1)), (10, st.integers(0, n - 1)), bad)

    sym = st.one_of(st.integers(0, 9), st.integers(0, 9), st.integers(0, ALPHA.end))
    code = []
    for _ in range(n_code):
        spec = draw(st.sampled_from(OPS))
        operands, imm = [], 0
        for role in spec.roles:
            modes = sorted(role.modes)
            if any(m == M for m, _ in operands):
                modes = [m for m in modes if m != M]
            mode = draw(st.sampled_from(modes))
            operands.append((mode, address(role)))
            if mode == M:
                imm = draw(sym)
        code.append(Slot.instr(spec.op, tuple(operands), imm))
    if draw(st.booleans()):  # loop back rather than run into the data
        code[-1] = Slot.instr(Op.JMP, ((D, draw(st.integers(N_PORTS, N_PORTS + n_code - 1))),))
    data = []
    for _ in range(n_data):
        kind = draw(st.sampled_from([Kind.DATA, Kind.DATA, Kind.DATA, Kind.EMPTY]))
        ptr = pick((10, st.integers(0, n - 1)), (10, st.integers(0, n_prog - 1)))
        data.append(Slot(kind, args=(ptr, 0, 0, 0), val=draw(sym) if kind else 0))
    program = hand(*code, data=tuple(data))
    return program, text, out_size, draw(st.integers(0, 60))


def test_memory_image_layout_the_fast_path_relies_on():
    # Past the program, every slot is DATA with p0 = 0 (the fast path reads only the
    # program's pointers and kinds); the input symbols and the END slots are the vals.
    p = asm("start: halt\nx: .ptr OUT, 3")
    image = memory_image(p, "12+a", out_size=5)
    rest = image.slots[len(p.slots):]
    assert all(s.kind == Kind.DATA and s.args == (0, 0, 0, 0) for s in rest)
    assert [s.val for s in rest] == ALPHA.encode("12+a") + [END] * 6
    assert image.out_base + image.out_size == len(image.slots)


def outcome(fn):
    try:
        r = fn()
    except MachineFault as e:
        return ("fault", e.pc, e.step, e.reason)
    return ("ok", r.output, r.symbols, r.steps, r.halted, r.memory, r.carry)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(machines())
def test_fast_path_matches_readable_path_and_step(case):
    program, text, out_size, max_steps = case
    kw = dict(max_steps=max_steps, out_size=out_size, stack_size=2, on_limit="stop")
    fast = outcome(lambda: run(program, text, **kw))
    slow = outcome(lambda: run(program, text, trace=True, **kw))
    assert fast == slow
    # The immutable-state stepper agrees step for step.
    state = load(program, text, out_size)
    try:
        while not state.halted and state.steps < max_steps:
            state, _ = step(program, state, stack_size=2)
    except MachineFault as e:
        assert slow[:3] == ("fault", e.pc, e.step)
        return
    assert slow[0] == "ok" and (state.steps, state.memory, state.carry) == (
        slow[3], slow[5], slow[6])


def test_golden_programs_agree_on_both_paths():
    """The expert programs: both paths give the golden answer with equal memory and steps."""
    from llamacpu.core.golden import GOLDEN, load_program

    for case in GOLDEN:
        r = both(load_program(case.program), case.input)
        assert r.output == case.expected, case.name


def test_instruction_rewriting_its_own_immediate():
    # `add self, #v, self` at address 2 writes its own val, which is its immediate:
    # v <- (v + v + C) mod 10 each time round; the translation must follow.
    p = hand(Slot.instr(Op.ADD, ((D, 2), (M, 0), (D, 2)), imm=1), Slot.instr(Op.JMP, ((D, 2),)))
    r = both(p, max_steps=2 * 6, on_limit="stop")
    v, c = 1, 0
    for _ in range(6):
        v, c = (2 * v + c) % 10, (2 * v + c) // 10
    assert (r.memory[2].val, r.carry) == (v, c) and r.memory[2].op == Op.ADD


# ---------------------------------------------------------------------------- the CLI

ADD_PROGRAM = """
; two single digits: "a+b" -> a+b
start:  lea   p, [IN]
        mov   a, [p]
        inc   p
        inc   p
        add   s, a, [p]
        getc  c
        lea   o, [OUT]
        jz    c, low
        mov   [o], c
        inc   o
low:    mov   [o], s
        halt
p: .ptr IN
o: .ptr IN
a: .data 0
s: .data 0
c: .data 0
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llamacpu.run", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def add_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "add.lasm"
    path.write_text(ADD_PROGRAM)
    return path


def test_cli_runs_and_traces(add_file, tmp_path):
    r = cli(str(add_file), "--input", "7+8")
    assert (r.returncode, r.stdout, r.stderr) == (0, "15\nsteps: 12\n", "")
    t = cli(str(add_file), "--input", "7+8", "--trace")
    lines = t.stdout.splitlines()
    assert t.returncode == 0 and lines[-2:] == ["15", "steps: 12"]
    assert lines[0].split() == ["step", "pc", "source", "operands", "C", "write", "next"]
    assert len(lines) == 1 + 12 + 2
    s = assemble(ADD_PROGRAM).symbols
    add_row = next(ln for ln in lines if "add   s, a, [p]" in ln)
    assert f"@{s['a']}=7" in add_row and "=8" in add_row and "0→1" in add_row
    assert add_row.split()[-1] == f"@{s['s']}=5"
    dot = tmp_path / "g.dot"
    g = cli(str(add_file), "--input", "1+2", "--graph", str(dot))
    assert g.returncode == 0 and g.stdout == "3\nsteps: 10\n" and "digraph" in dot.read_text()


@pytest.mark.parametrize("args, message", [
    (["{missing}", "--input", "1+2"], "error: cannot read"),
    (["{bad}"], "t.lasm:1:1: error:"),
    (["{add}", "--input", "1+\u00e9"], "error: input position 2: character '\u00e9'"),
    (["{add}", "--input", "+"], "error: fault at pc"),
    (["{add}", "--input", "1+2", "--max-steps", "3"], "step limit of 3"),
    (["{add}", "--max-steps", "0"], "error: --max-steps must be at least 1"),
    (["{add}", "--max-steps", "many"], "error: argument --max-steps"),
    (["{add}", "--out-size", "0"], "error: --out-size must be at least 1"),
    (["{add}", "--backend", "nope"], "error: --backend must be one of reference"),
    (["{add}", "--input", "1+2", "--graph", "{tmp}/g.txt"], "error: cannot draw the graph"),
    ([], "error: the following arguments are required"),
])
def test_cli_errors_exit_2_without_traceback(add_file, tmp_path, args, message):
    bad = tmp_path / "t.lasm"
    bad.write_text("frobnicate x\n")
    names = {"missing": str(tmp_path / "nope.lasm"), "bad": str(bad), "add": str(add_file),
             "tmp": str(tmp_path)}
    r = cli(*[a.format(**names) for a in args])
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr + r.stdout
    if not args or args[0] != "{bad}":
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_runs_prompts_as_people_type_them():
    """A program written for the default alphabet runs a prompt with capitals and any
    printable ASCII (in PRINTABLE_ALPHABET, which extends the default one)."""
    add = str(PROGRAMS_DIR / "add.lasm")
    r = cli(add, "--input", "Add 12 and 35.")
    assert (r.returncode, r.stdout.splitlines()[0], r.stderr) == (0, "47", "")
    r = cli(str(PROGRAMS_DIR / "reverse.lasm"), "--input", "Reverse: Hello, World! #1")
    assert (r.returncode, r.stdout.splitlines()[0]) == (0, "1# !dlroW ,olleH")
    r = cli(add, "--input", "12+35")  # a prompt the default alphabet writes runs in it
    assert r.stdout == "47\nsteps: 85\n"


def test_format_trace_shows_code_without_comments():
    from llamacpu.run import format_trace

    p = asm("""
        start: jeq  x, #';', done   ; a ';' in quotes is code, this is a comment
        done:  halt
        x: .data ';'
    """)
    lines = format_trace(p, run(p, "", trace=True).trace).splitlines()
    assert len(lines) == 3 and "comment" not in lines[1]
    assert lines[1].split() == ["0", "2", "start:", "jeq", "x,", "#';',", "done", "@4=';'",
                                "#';'", "→3", "0"]
    assert lines[2].split() == ["1", "3", "done:", "halt", "0", "3"]


def test_cli_prints_the_trace_up_to_a_fault(add_file):
    r = cli(str(add_file), "--input", "1+a", "--trace")
    assert r.returncode == 2 and "ADD operand 3" in r.stderr
    assert r.stdout.splitlines()[0].startswith("step") and len(r.stdout.splitlines()) == 1 + 4


def test_role_table_is_what_the_trace_assumes():
    # values[i] per role: the trace and the CLI rely on these roles existing as documented.
    assert {r for s in OPS for r in s.roles} == set(Role)
    assert SPEC[Op.MOV].roles == (Role.DST, Role.SLOT)
