"""Control-flow graph, validation and drawing (llamacpu/graph.py)."""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamacpu.core import graph
from llamacpu.core.graph import Diagnostic, ProgramError, build_cfg, check, validate
from llamacpu.core.isa import Alphabet, LlamacpuError, Mode, Op, Program, Slot, SourceLoc

D, I, M = Mode.DIRECT, Mode.INDIRECT, Mode.IMMEDIATE
PROGRAMS_DIR = Path(__file__).resolve().parents[1] / "programs"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def prog(*body: Slot, entry: int = 2, **labels: int) -> Program:
    """A program whose slots 2.. are ``body``, after the IN and OUT ports."""
    return Program(slots=(Slot.data(), Slot.data()) + body, entry=entry,
                   symbols={"IN": 0, "OUT": 1, **labels})


def jmp(t: int, mode: Mode = D) -> Slot:
    return Slot.instr(Op.JMP, ((mode, t),))


def call(t: int, mode: Mode = D) -> Slot:
    return Slot.instr(Op.CALL, ((mode, t),))


def jz(a: int, t: int, mode: Mode = D) -> Slot:
    return Slot.instr(Op.JZ, ((D, a), (mode, t)))


HALT, RET, NOP = Slot.instr(Op.HALT), Slot.instr(Op.RET), Slot.instr(Op.NOP)


def inc(p: int) -> Slot:
    return Slot.instr(Op.INC, ((D, p),))


def edges(g) -> set[tuple[int, int, str]]:
    return {(u, v, k) for u, v, k in g.edges(data="kind")}


def scan_program() -> Program:
    """Walk the input to END, calling ``sub`` once per symbol; one dead instruction."""
    return prog(
        Slot.instr(Op.LEA, ((D, 11), (I, 0))),                     # 2 start: lea p, [IN]
        Slot.instr(Op.JEQ, ((I, 11), (M, 0), (D, 7)), imm=54),     # 3 loop: jeq [p], #END, done
        call(9),                                                   # 4 call sub
        inc(11),                                                   # 5 inc p
        jmp(3),                                                    # 6 jmp loop
        HALT,                                                      # 7 done: halt
        inc(11),                                                   # 8 (dead)
        Slot.instr(Op.ADD, ((D, 12), (D, 12), (M, 0)), imm=1),     # 9 sub: add x, x, #1
        RET,                                                       # 10 ret
        Slot.data(ptr=0),                                          # 11 p
        Slot.data(0),                                              # 12 x
        start=2, loop=3, done=7, sub=9, p=11, x=12,
    )


# ---------------------------------------------------------------------------- the graph

def test_scan_program_graph() -> None:
    p = scan_program()
    g = build_cfg(p)
    assert sorted(g.nodes) == list(range(2, 11))
    assert edges(g) == {
        (2, 3, "next"), (3, 4, "next"), (3, 7, "branch-taken"), (4, 9, "call"),
        (4, 5, "next"), (5, 6, "next"), (6, 3, "jump"), (8, 9, "next"), (9, 10, "next"),
        (10, 5, "return"),
    }
    assert g.graph["entry"] == 2
    assert g.nodes[9]["op"] == Op.ADD
    assert g.nodes[9]["text"] == "add x, x, #1"
    assert g.nodes[9]["labels"] == ("sub",)
    assert g.nodes[3]["text"] == "jeq [p], #END, done"
    assert g.nodes[2]["text"] == "lea p, [IN]"
    assert g.nodes[4]["text"] == "call sub"
    assert g.nodes[5]["line"] is None
    assert not any(d for _, d in g.nodes(data="dynamic"))
    diags = validate(p)
    assert [(d.severity, d.addr) for d in diags] == [("warning", 8)]
    assert diags[0].message == "unreachable instruction 'inc p'"


def test_node_line_comes_from_the_source_map() -> None:
    p = prog(NOP, HALT)
    p = dataclasses.replace(p, source_map={3: SourceLoc("t.lasm", 7, 9, "        halt")})
    g = build_cfg(p)
    assert g.nodes[3]["line"] == 7 and g.nodes[2]["line"] is None


def test_no_fall_through_after_jmp_halt_ret() -> None:
    g = build_cfg(prog(jmp(5), HALT, RET, HALT))
    assert edges(g) == {(2, 5, "jump")}


def test_coinciding_edges_keep_both_kinds() -> None:
    # jz x, 3 where 3 is also the fall-through: one DiGraph edge, both kinds recorded
    g = build_cfg(prog(jz(5, 3), HALT, Slot.data(0)))
    assert g.edges[2, 3]["kind"] == "branch-taken"
    assert set(g.edges[2, 3]["kinds"]) == {"branch-taken", "next"}


def test_returns_go_only_to_their_own_call_sites() -> None:
    # 2 call f; 3 call g; 4 halt; 5 f: ret; 6 g: ret
    g = build_cfg(prog(call(5), call(6), HALT, RET, RET))
    assert {(u, v) for u, v, k in edges(g) if k == "return"} == {(5, 3), (6, 4)}
    # the same callee from two sites returns to both
    g = build_cfg(prog(call(5), call(5), HALT, RET))
    assert {(u, v) for u, v, k in edges(g) if k == "return"} == {(5, 3), (5, 4)}


def test_nested_call_returns_to_the_inner_site_only() -> None:
    # 2 call outer; 3 halt; 4 outer: call inner; 5 ret; 6 inner: ret
    g = build_cfg(prog(call(4), HALT, call(6), RET, RET))
    returns = {(u, v) for u, v, k in edges(g) if k == "return"}
    assert returns == {(5, 3), (6, 5)}  # inner's RET never returns to main's 3


def test_indirect_call_returns_from_every_ret() -> None:
    # 2 call [q]; 3 halt; 4 f: ret; 5 g: ret; 6 q: .ptr f
    g = build_cfg(prog(call(6, I), HALT, RET, RET, Slot.data(ptr=4)))
    assert g.nodes[2]["dynamic"]
    assert (2, 3, "next") in edges(g)
    assert {(u, v) for u, v, k in edges(g) if k == "return"} == {(4, 3), (5, 3)}


def test_indirect_jump_inside_a_callee_falls_back_to_every_ret() -> None:
    # 2 call f; 3 halt; 4 f: jmp [q]; 5 ret; 6 ret; 7 q: .ptr 5
    g = build_cfg(prog(call(4), HALT, jmp(7, I), RET, RET, Slot.data(ptr=5)))
    assert g.nodes[4]["dynamic"]
    assert not list(g.successors(4))  # the indirect target gets no edge
    assert {(u, v) for u, v, k in edges(g) if k == "return"} == {(5, 3), (6, 3)}


def test_indirect_branch_keeps_its_fall_through() -> None:
    g = build_cfg(prog(jz(5, 6, I), HALT, Slot.data(0), Slot.data(ptr=3)))
    assert g.nodes[2]["dynamic"]
    assert edges(g) == {(2, 3, "next")}


def test_instr_text_operands() -> None:
    p = prog(
        Slot.instr(Op.MOV, ((I, 7), (M, 0)), imm=11),     # '+' is symbol 10 + 1
        Slot.instr(Op.JEQ, ((D, 8), (M, 0), (D, 2)), imm=54),
        Slot.instr(Op.ADD, ((D, 9), (D, 500), (M, 0)), imm=3),
        Slot.instr(Op.MOV, ((D, 7), (M, 0)), imm=12),     # '-'
        HALT,
        Slot.data(ptr=1), Slot.data(), Slot.data(), Slot.data(),
        start=2, o=7, xs=8,
    )
    assert graph.instr_text(p, 2) == "mov [o], #'+'"
    assert graph.instr_text(p, 3) == "jeq xs, #END, start"
    assert graph.instr_text(p, 4) == "add xs+1, 500, #3"  # nearest label + offset; outside
    assert graph.instr_text(p, 6) == "halt"
    assert graph.instr_text(p, 7) == ".data"


# ---------------------------------------------------------------------------- validation

def _only(diags: list[Diagnostic], severity: str) -> list[Diagnostic]:
    return [d for d in diags if d.severity == severity]


def test_clean_program_has_no_diagnostics() -> None:
    assert validate(prog(call(5), jz(6, 2), HALT, RET, Slot.data(0))) == []
    assert check(prog(HALT)) == []


def test_jump_target_outside_the_program() -> None:
    diags = validate(prog(jz(4, 40), HALT, Slot.data(0)))
    (e,) = _only(diags, "error")
    assert e.addr == 2
    assert "slot 40 (outside the program, 0..4)" in e.message
    assert e.message.endswith("is not an instruction in 'jz 4, 40'")


def test_jump_into_data_names_the_label() -> None:
    diags = validate(prog(jz(4, 4), HALT, Slot.data(0), x=4))
    (e,) = _only(diags, "error")
    assert e.addr == 2 and e.message.startswith("jump target 'x' (slot 4, DATA)")


def test_call_into_data() -> None:
    (e,) = _only(validate(prog(call(4), HALT, Slot.data(0), buf=4)), "error")
    assert e.addr == 2 and e.message.startswith("call target 'buf' (slot 4, DATA)")


def test_fall_through_into_data_and_off_the_end() -> None:
    # 2 jz x, 4; 3 nop -> falls into x;   end: 5 ... 6 nop falls off the end
    diags = validate(prog(jz(4, 5), NOP, Slot.data(0), HALT, NOP, x=4))
    errors = _only(diags, "error")
    assert [(d.addr, d.message) for d in errors] == [
        (3, "'nop' falls through into 'x' (slot 4, DATA)"),
        (6, "'nop' falls off the end of the program"),
    ]


def test_conditional_branch_falls_through_too() -> None:
    (e,) = _only(validate(prog(HALT, jz(2, 2), Slot.data(0)), ), "error")
    assert e.addr == 3 and "falls through into" in e.message


def test_call_fall_through_is_checked_only_if_the_callee_returns() -> None:
    # the callee halts: the CALL never comes back, so data after it is fine
    assert _only(validate(prog(call(4), Slot.data(0), HALT)), "error") == []
    # the callee returns: it lands on data
    errors = _only(validate(prog(call(4), Slot.data(0), RET)), "error")
    assert [(e.addr, e.message) for e in errors] == [
        (2, "'call 4' falls through into slot 3 (DATA)"),
        (2, "no HALT is reachable from the entry")]
    # an indirect callee is assumed to return
    (e,) = _only(validate(prog(call(4, I), Slot.data(0), Slot.data(ptr=5), HALT)), "error")
    assert (e.addr, e.message) == (2, "'call [4]' falls through into slot 3 (DATA)")


def test_entry_not_an_instruction() -> None:
    diags = validate(prog(HALT, Slot.data(0), entry=3, x=3))
    assert [(d.severity, d.addr) for d in diags] == [("error", 3)]  # no reachability noise
    assert diags[0].message == "the entry 'x' (slot 3, DATA) is not an instruction"
    (e,) = _only(validate(prog(HALT, entry=9)), "error")
    assert "slot 9 (outside the program" in e.message


def test_no_halt_reachable() -> None:
    # 2 loop: jmp loop; 3 halt (dead)
    diags = validate(prog(jmp(2), HALT))
    assert [(d.severity, d.addr) for d in diags] == [("error", 2), ("warning", 3)]
    assert diags[0].message == "no HALT is reachable from the entry"


def test_no_halt_with_an_indirect_jump_is_only_a_warning() -> None:
    # 2 jmp [q]; 3 q: .ptr 2   (may go anywhere, so no error; but nothing address-taken halts)
    diags = validate(prog(jmp(3, I), Slot.data(ptr=2)))
    assert _only(diags, "error") == []
    assert diags[0].severity == "warning" and "indirect jump" in diags[0].message


def test_indirect_jump_reaches_address_taken_code() -> None:
    # a hand-made return address: 2 lea r, back; 3 jmp sub; 4 back: halt;
    # 5 sub: jmp [r]; 6 r: .ptr 0; 7 dead: nop; 8 halt
    p = prog(Slot.instr(Op.LEA, ((D, 6), (D, 4))), jmp(5), HALT, jmp(6, I), Slot.data(),
             NOP, HALT, back=4, sub=5, r=6, dead=7)
    assert graph.address_taken(p) == frozenset({4})
    live, dynamic = graph.reachable(p)
    assert dynamic and live == {2, 3, 4, 5}
    diags = validate(p)
    assert [(d.severity, d.addr) for d in diags] == [("warning", 7)]
    assert diags[0].message == "unreachable instruction 'nop' and 1 more after it (slots 7..8)"


def test_data_pointer_makes_code_address_taken() -> None:
    p = prog(jmp(4, I), HALT, Slot.data(ptr=3))
    assert graph.address_taken(p) == frozenset({3})
    assert validate(p) == []


def test_unreachable_runs_are_grouped() -> None:
    diags = validate(prog(HALT, NOP, NOP, jmp(2), HALT, inc(9), HALT, Slot.data()))
    # 3..5 are dead (the jmp back does not make them live); 6 is dead; 7 and 8 too
    assert [(d.addr, d.message) for d in diags] == [
        (3, "unreachable instruction 'nop' and 5 more after it (slots 3..8)")]


def test_diagnostic_str_and_location() -> None:
    p = dataclasses.replace(
        prog(jmp(4), inc(5), HALT, Slot.data()),
        source_map={3: SourceLoc("add.lasm", 12, 5, "    inc p")}, symbols={"p": 5},
        name="add.lasm")
    (d,) = validate(p)
    assert d.location == "add.lasm:12:5"
    assert str(d) == "add.lasm:12:5: warning: unreachable instruction 'inc p'"
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.addr = 0  # type: ignore[misc]
    # without a source map, the program's own description of the slot
    (d,) = validate(prog(jmp(4), NOP, HALT))
    assert str(d) == "<program>: slot 3: warning: unreachable instruction 'nop'"


def test_check_raises_with_every_diagnostic() -> None:
    p = prog(jmp(9), HALT)
    with pytest.raises(ProgramError) as info:
        check(p)
    err = info.value
    assert isinstance(err, LlamacpuError)
    assert [d.severity for d in err.diagnostics] == ["error", "error", "warning"]
    assert "slot 9 (outside the program" in str(err)
    assert str(err).startswith("2 errors in the program:")
    # warnings alone do not raise; they are returned
    (w,) = check(prog(jmp(4), NOP, HALT))
    assert w.severity == "warning"


# ------------------------------------------------------- soundness against executions

# weighted towards calls, returns and branches, which is where return edges come from
_CONTROL_OPS = (Op.NOP, Op.NOP, Op.HALT, Op.JMP, Op.JZ, Op.JZ, Op.CALL, Op.CALL, Op.RET, Op.RET)


@st.composite
def control_programs(draw) -> Program:
    """Programs of control ops only; most targets are code, a few miss or land in data."""
    n_code = draw(st.integers(1, 14))
    n_data = draw(st.integers(0, 2))
    size = 2 + n_code + n_data
    body = []
    for _ in range(n_code):
        op = draw(st.sampled_from(_CONTROL_OPS))
        if draw(st.integers(0, 9)) < 8:
            t = draw(st.integers(2, 2 + n_code - 1))
        else:
            t = draw(st.integers(0, size + 1))
        if op in (Op.JMP, Op.CALL):
            body.append(Slot.instr(op, ((D, t),)))
        elif op == Op.JZ:
            body.append(jz(0, t))
        else:
            body.append(Slot.instr(op))
    body += [Slot.data(0)] * n_data
    return prog(*body)


def _walk(p: Program, rng: random.Random, steps: int = 300) -> list[tuple[int, int | None]]:
    """One execution with coin-flip branches: the (pc, next pc) transitions it makes.

    ``None`` as next pc means it halted or returned with an empty stack.
    """
    def is_instr(a: int) -> bool:
        return 0 <= a < len(p) and p.slots[a].kind.name == "INSTR"

    pc, stack, out = p.entry, [], []
    for _ in range(steps):
        if not is_instr(pc):
            break
        s = p.slots[pc]
        nxt: int | None = pc + 1
        if s.op == Op.HALT:
            nxt = None
        elif s.op == Op.JMP or (s.op == Op.JZ and rng.random() < 0.5):
            nxt = s.args[0 if s.op == Op.JMP else 1]
        elif s.op == Op.CALL:
            if len(stack) >= 16:
                break
            stack.append(pc + 1)
            nxt = s.args[0]
        elif s.op == Op.RET:
            nxt = stack.pop() if stack else None
        out.append((pc, nxt))
        if nxt is None:
            break
        pc = nxt
    return out


@settings(max_examples=300, deadline=None, derandomize=True)
@given(control_programs(), st.integers(0, 2**32 - 1))
def test_every_executed_transition_is_an_edge(p: Program, seed: int) -> None:
    g = build_cfg(p)
    assert set(g.nodes) == {a for a, s in enumerate(p.slots) if s.kind.name == "INSTR"}
    assert all(k in graph.EDGE_KINDS for _, _, k in g.edges(data="kind"))
    diags = validate(p)
    errors_at = {d.addr for d in diags if d.severity == "error"}
    warned = set()
    for d in diags:
        if d.message.startswith("unreachable"):
            m = re.search(r"slots (\d+)\.\.(\d+)", d.message)
            warned |= set(range(int(m[1]), int(m[2]) + 1)) if m else {d.addr}
    rng = random.Random(seed)
    for _ in range(5):
        for pc, nxt in _walk(p, rng):
            assert pc not in warned, "an executed instruction was called unreachable"
            if nxt is None:
                continue
            if nxt in g:
                assert g.has_edge(pc, nxt), f"{pc}->{nxt} executed but not in the graph"
            else:  # the machine would fault here: validation must have said so, at the
                # instruction, or for a RET at the CALL whose return lands there
                culprit = nxt - 1 if p.slots[pc].op == Op.RET else pc
                assert culprit in errors_at, f"{pc}->{nxt} faults without an error"


# ---------------------------------------------------------------------------- drawing

def test_to_dot_has_every_node_and_edge() -> None:
    p = prog(Slot.instr(Op.JEQ, ((D, 6), (M, 0), (D, 5)), imm=10),  # #'"' needs escaping
             call(7), jmp(2), HALT, Slot.data(0), RET, start=2)
    p = dataclasses.replace(p, alphabet=Alphabet(base=10, charset='"\\'))
    text = graph.to_dot(p)
    g = build_cfg(p)
    assert text.startswith('digraph "<program>" {') and text.rstrip().endswith("}")
    for a in g.nodes:
        assert re.search(rf"^  n{a} \[label=", text, re.M), a
    for u, v, kind in g.edges(data="kind"):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"  n{u} -> n{v} "))
        assert graph.EDGE_STYLES[kind].color in line
    assert text.count("->") == g.number_of_edges()
    assert '#\'\\"\'' in text  # the immediate '"' is escaped inside the quoted label
    assert "start:" in text


def test_draw_png_dot_and_bad_extension(tmp_path: Path) -> None:
    p = scan_program()
    out = graph.draw(p, tmp_path / "scan.png")
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    graph.draw(p, tmp_path / "scan.dot")
    assert (tmp_path / "scan.dot").read_text() == graph.to_dot(p)
    with pytest.raises(ValueError, match=r"\.png.*\.dot"):
        graph.draw(p, tmp_path / "scan.jpeg")
    assert not (tmp_path / "scan.jpeg").exists()


def test_draw_handles_self_loops_and_empty_code(tmp_path: Path) -> None:
    graph.draw(prog(jmp(2)), tmp_path / "loop.png")
    assert (tmp_path / "loop.png").read_bytes()[:8] == PNG_MAGIC
    graph.draw(prog(Slot.data()), tmp_path / "none.png")  # no instructions at all
    assert (tmp_path / "none.png").read_bytes()[:8] == PNG_MAGIC


# ------------------------------------------------------------------ assembled programs

def _assemble(text: str, file: str = "t.lasm") -> Program:
    asm = pytest.importorskip("llamacpu.asm")
    return asm.assemble(text, file=file)


def test_assembled_snippet_diagnostics_point_at_the_source() -> None:
    p = _assemble(
        "start:  lea  p, [IN]\n"
        "loop:   jeq  [p], #END, done\n"
        "        inc  p\n"
        "        jmp  loop\n"
        "        inc  p\n"
        "done:   halt\n"
        "p:      .ptr IN\n",
        file="scan.lasm")
    (d,) = validate(p)
    assert str(d) == "scan.lasm:5:9: warning: unreachable instruction 'inc p'"


def test_assembled_jump_into_data_and_fall_through() -> None:
    p = _assemble("start: jz x, x\n       jz x, end\n       nop\nx:     .data 0\n"
                  "end:   halt\n")
    msgs = [str(d) for d in validate(p)]
    assert msgs == [
        "t.lasm:1:8: error: jump target 'x' (slot 5, DATA) is not an instruction in "
        "'jz x, x'",
        "t.lasm:3:8: error: 'nop' falls through into 'x' (slot 5, DATA)",
    ]


@pytest.mark.parametrize("path", sorted(PROGRAMS_DIR.glob("*.lasm")), ids=lambda p: p.name)
def test_shipped_programs_validate(path: Path, tmp_path: Path) -> None:
    p = _assemble(path.read_text(), file=path.name)
    errors = [str(d) for d in validate(p) if d.severity == "error"]
    assert errors == []
    dot = graph.to_dot(p)
    assert all(f"  n{a} [" in dot for a in build_cfg(p).nodes)


# Inputs tried on every shipped program: each program runs on the ones its format allows.
_PROBE_INPUTS = ("", "7", "12+34", "987-45", "12*34", "0123?99", "31415", "12,18", "hi")


def _executed_transitions_are_edges(p: Program, inputs: tuple[str, ...]) -> int:
    """Run ``p`` (reference interpreter, traced) on each input it accepts; check every
    executed transition against the CFG and its reachable set. Returns how many ran."""
    interp = pytest.importorskip("llamacpu.core.interp")
    g = build_cfg(p)
    live, _ = graph.reachable(p, g)
    runs = 0
    for text in inputs:
        try:
            r = interp.run(p, text, 20_000, trace=True, on_limit="stop")
        except interp.MachineFault:
            continue  # not an input this program accepts
        runs += 1
        for t in r.trace:
            assert t.pc in live, f"{p.where(t.pc)} ran but is not reachable in the graph"
            if t.op == Op.HALT:
                continue
            if g.has_edge(t.pc, t.next_pc):
                continue
            # only an indirect target may lack an edge; it must then be address-taken
            assert g.nodes[t.pc]["dynamic"], f"{t.pc}->{t.next_pc} not an edge"
            assert t.next_pc in graph.address_taken(p)
    return runs


def test_assembled_calls_match_the_interpreter() -> None:
    p = _assemble(
        "start:  lea  p, [IN]\n"
        "loop:   jeq  [p], #END, done\n"
        "        call outer\n"
        "        inc  p\n"
        "        jmp  loop\n"
        "done:   lea  r, back\n"
        "        jmp  [r]\n"
        "back:   halt\n"
        "outer:  call inner\n"
        "        jeq  [p], #1, skip\n"
        "        call inner\n"
        "skip:   ret\n"
        "inner:  add  x, x, #1\n"
        "        ret\n"
        "p:      .ptr IN\n"
        "r:      .ptr IN\n"
        "x:      .data 0\n")
    assert validate(p) == []
    g = build_cfg(p)
    s = p.symbols
    returns = {(u, v) for u, v, k in edges(g) if k == "return"}
    # inner returns into outer (after each of its two calls), outer into the main loop
    assert returns == {(s["skip"], s["loop"] + 2), (s["inner"] + 1, s["outer"] + 1),
                       (s["inner"] + 1, s["skip"])}
    assert g.nodes[s["done"] + 1]["dynamic"]
    assert _executed_transitions_are_edges(p, ("", "1", "21", "1121")) == 4


@pytest.mark.parametrize("path", sorted(PROGRAMS_DIR.glob("*.lasm")), ids=lambda p: p.name)
def test_shipped_programs_executions_follow_the_graph(path: Path) -> None:
    p = _assemble(path.read_text(), file=path.name)
    if _executed_transitions_are_edges(p, _PROBE_INPUTS) == 0:
        pytest.skip(f"none of the probe inputs suits {path.name}")

