"""The library (programs/lib/lib.lasm), the linker (core/link.py) and the compiler from
expressions and chains to main programs (core/compose.py).

Every linked program runs on the reference interpreter and must answer Python's value of
its expression or chain, for hypothesis-drawn expressions with words around them; a main
program's slots depend only on the number of operations; the library sits at the same
addresses under every main; linked programs validate, round-trip through the
disassembler and run the same on the hard differentiable machine.
"""

from __future__ import annotations

import doctest
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llamacpu.core.compose as compose
import llamacpu.core.link as link_module
from llamacpu.core.asm import AssemblyError, assemble
from llamacpu.core.compose import (
    CHAIN_OPS,
    STACK_ENTRIES,
    BinOp,
    Num,
    chain_calls,
    chain_program,
    draw_expression,
    evaluate,
    evaluate_chain,
    intermediates,
    is_valid,
    main_program,
    out_size,
    parse_expr,
    postfix_calls,
    program_text,
    render,
    stack_depth,
    to_postfix,
)
from llamacpu.core.disasm import disassemble
from llamacpu.core.graph import build_cfg, reachable, validate
from llamacpu.core.interp import MachineFault, run
from llamacpu.core.isa import PRINTABLE_ALPHABET, Kind, default_out_size
from llamacpu.core.link import link, load_library, main_calls, main_slots, routines
from llamacpu.evaluate.strategies import filler
from llamacpu.run import main as run_main

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True)
LIB = load_library()
ROUTINES = ("num", "add", "sub", "mul", "max", "min", "swap", "dup", "print")


def answer(main: str, prompt: str, calls: list[str] | None = None, **kw):
    """Run ``main`` linked onto the library on ``prompt``, with enough scratch."""
    size = out_size(calls, prompt) if calls is not None else None
    return run(link(main), prompt, out_size=size, max_steps=2_000_000, **kw)


def check_expression(expr: str, prompt: str | None = None) -> int:
    """The linked main program of ``expr`` answers ``evaluate(expr)``; returns its steps."""
    prompt = expr if prompt is None else prompt
    result = answer(main_program(expr), prompt, postfix_calls(expr))
    assert result.halted
    assert result.output == str(evaluate(expr)), f"{prompt!r}"
    return result.steps


# ------------------------------------------------------------------ the library


def test_library_routines_are_entered_only_by_call():
    assert tuple(routines(LIB)) == ROUTINES
    assert "start" not in LIB.symbols
    g = build_cfg(LIB)
    for name, addr in routines(LIB).items():
        assert LIB.slots[addr].kind == Kind.INSTR
        into = [u for u, _, kinds in g.in_edges(addr, data="kinds")
                if {"next", "jump", "branch-taken"} & set(kinds)]
        assert into == [], f"library code falls or jumps into {name}"
    assert not any(g.nodes[a]["op"].name == "HALT" for a in g.nodes)
    assert LIB.symbols["_stack"] + STACK_ENTRIES == len(LIB), "the stack ends the library"


@pytest.mark.parametrize("expr, prompt", [
    ("0", "0"),
    ("7", "seven is 7"),
    ("007", "007"),
    ("0 * 12345", "0*12345"),
    ("12345 * 0", "12345*0"),
    ("999 + 1", "999+1"),
    ("1 + 999", "what is 1 plus 999?"),
    ("1000 - 1", "1000-1"),
    ("12 - 12", "12-12"),
    ("100 - 99", "100 - 99 ="),
    ("99 * 99", "99*99"),
    ("123456789 * 987654321", "123456789*987654321"),
    ("(12 + 345) * 6 - 78", "calculate (12 + 345) * 6 - 78 please"),
    ("2 * (3 + 4)", "2*(3+4)"),
    ("10 - (5 - 2)", "10-(5-2)"),
    ("007 + 0005", "add 007 and 0005"),
    ("000 * 5 + 00", "000*5+00"),
    ("1 + 2 * 3 - 4", "1+2*3-4"),
    ("((1))", "((1))"),
])
def test_expression_cases(expr, prompt):
    check_expression(expr, prompt)


@pytest.mark.parametrize("a, b", [("5", "3"), ("3", "5"), ("12", "12"), ("100", "99"),
                                  ("99", "100"), ("0", "0"), ("120", "121"), ("7", "70")])
def test_max_min_swap_dup(a, b):
    x, y = int(a), int(b)
    for calls, want in ((["num", "num", "max"], max(x, y)), (["num", "num", "min"], min(x, y)),
                        (["num", "num", "swap"], x), (["num", "dup", "mul"], x * x),
                        (["num", "num", "swap", "dup", "add"], 2 * x)):
        calls = calls + ["print"]
        assert answer(program_text(calls), f"{a} and {b}", calls).output == str(want), calls


@st.composite
def expressions(draw, max_ops: int = 8, max_digits: int = 30) -> str:
    ops = draw(st.integers(1, max_ops))
    digits = draw(st.integers(1, max_digits))
    return draw_expression(draw(st.randoms(use_true_random=False)), ops, digits,
                           draw(st.booleans()))


@PROPERTY
@given(expressions(), filler(), filler())
def test_expressions_answer_python(expr, before, after):
    check_expression(expr, f"{before} {expr} {after}")


@st.composite
def chains(draw, max_ops: int = 8, max_digits: int = 30) -> tuple[list[str], list[int], str]:
    """A chain, its numbers and a wording: every difference non-negative, every product
    by a number of at most 4 digits."""
    ops = draw(st.lists(st.sampled_from(CHAIN_OPS + ("rsub",)), min_size=1, max_size=max_ops))
    big = st.integers(0, 10 ** draw(st.integers(1, max_digits)) - 1)
    acc = draw(big)
    numbers, words = [acc], [f"start with {acc}"]
    for op in ops:
        n = draw(st.integers(0, 9999) if op == "mul" else big)
        if op == "sub":
            n %= acc + 1
        elif op == "rsub":
            n += acc
        numbers.append(n)
        acc = evaluate_chain([op], [acc, n])
        words.append({"add": "add {}", "sub": "subtract {}", "mul": "multiply by {}",
                      "max": "take the larger of it and {}", "min": "the smaller of it and {}",
                      "rsub": "subtract the result from {}"}[op].format(n))
    return ops, numbers, ", then ".join(words)


@PROPERTY
@given(chains())
def test_chains_answer_python(chain):
    ops, numbers, prompt = chain
    calls = chain_calls(ops)
    result = answer(chain_program(ops), prompt, calls)
    assert result.output == str(evaluate_chain(ops, numbers)), prompt
    assert ("swap" in calls) == ("rsub" in ops)


def test_a_worded_chain_with_a_swapped_operand():
    prompt = "add 12 and 345, then multiply by 6, then subtract the result from 3000"
    ops = ["add", "mul", "rsub"]
    assert chain_calls(ops) == ["num", "num", "add", "num", "mul", "num", "swap", "sub", "print"]
    assert answer(chain_program(ops), prompt).output == str(3000 - (12 + 345) * 6) == "858"


def test_the_printable_alphabet():
    lib = load_library(alphabet=PRINTABLE_ALPHABET)
    p = link(main_program("(12 + 345) * 6 - 78"), lib)
    assert p.alphabet == PRINTABLE_ALPHABET
    assert run(p, "Calculate (12 + 345) * 6 - 78, Please!").output == "2064"


# ------------------------------------------------------------------ layout and slots


@PROPERTY
@given(expressions(), st.integers(1, 40), st.randoms(use_true_random=False))
def test_main_slots_depend_only_on_the_operations(expr, digits, rng):
    """The same expression with other numbers (other lengths) links to the same main
    slots; the library is the same Program at the same addresses under every main."""
    other = re.sub(r"[0-9]+", lambda _: str(rng.randrange(10 ** digits)), expr)
    p, q = link(main_program(expr)), link(main_program(other))
    n_ops = sum(tok in "+-*" for tok in to_postfix(expr))
    assert len(main_slots(p)) == 2 * n_ops + 3
    assert main_slots(p) == main_slots(q)
    for linked in (p, q):
        assert linked.slots[:len(LIB)] == LIB.slots
        assert linked.linkage.main == len(LIB) == linked.entry
        assert linked.linkage.routines == routines(LIB)
        assert all(linked.symbols[k] == v for k, v in LIB.symbols.items())
    assert main_calls(p) == postfix_calls(expr)


def test_main_slots_needs_a_linked_program():
    with pytest.raises(ValueError, match="not a linked program"):
        main_slots(LIB)


# ------------------------------------------------------------------ validation, round trip


@PROPERTY
@given(expressions(max_ops=5, max_digits=3))
def test_linked_programs_validate_and_round_trip(expr):
    p = link(main_program(expr), file="main.lasm")
    assert validate(p) == []
    text = disassemble(p)
    q = assemble(text)
    assert q == p and q.entry == p.entry
    assert run(q, expr).output == run(p, expr).output == str(evaluate(expr))


def test_unused_routines_are_not_unreachable_but_dead_library_code_is():
    p = link("call num\ncall print\nhalt\n")
    assert validate(p) == []
    live, _ = reachable(p)
    assert set(routines(LIB).values()) <= live
    assert p.linkage.routines["mul"] not in reachable(p, routines=False)[0]
    lib = assemble("used:   ret\n        nop\nnever:  ret\n_dead:  ret\n", file="small.lib")
    diags = validate(link("call used\nhalt\n", lib))
    assert [(d.severity, d.message) for d in diags] == [
        ("warning", "unreachable instruction 'nop'"),
        ("warning", "unreachable instruction 'ret'")]  # _dead: not a routine
    assert "small.lib:2:" in diags[0].location


def test_an_ordinary_program_still_reports_uncalled_subroutines():
    p = assemble("start: halt\nsub1:  ret\n")
    assert [d.message for d in validate(p)] == ["unreachable instruction 'ret'"]


def test_a_halt_only_the_library_reaches_does_not_count():
    lib = assemble("stop:   halt\n", file="stop.lib")
    errors = [d for d in validate(link("loop: jmp loop\n", lib)) if d.severity == "error"]
    assert [d.message for d in errors] == ["no HALT is reachable from the entry"]
    assert validate(link("call stop\n", lib)) == []  # reached through the call


def test_a_label_clash_names_the_main_program_line():
    with pytest.raises(AssemblyError) as e:
        link("        call num\nadd:    call add\n        halt\n", file="main.lasm")
    assert (e.value.file, e.value.line, e.value.col) == ("main.lasm", 2, 1)
    assert "label 'add' is already defined in" in e.value.message
    assert re.search(r"lib/lib\.lasm:\d+, which this program is linked onto", e.value.message)
    assert str(e.value).startswith("main.lasm:2:1: error: ")
    with pytest.raises(AssemblyError, match=r"main.lasm:1:1: error: .*'_sp'"):
        link("_sp: halt\n", file="main.lasm")


@pytest.mark.parametrize("main, message", [
    ("call nope\nhalt\n", "undefined label 'nope'"),
    (".alphabet base 10\nhalt\n", "no .alphabet in a program linked onto"),
    ("; nothing\n", "no instructions"),
    ("start: .data 0\nhalt\n", "'start' must label an instruction"),
])
def test_main_program_errors(main, message):
    with pytest.raises(AssemblyError, match=message) as e:
        link(main, file="m.lasm")
    assert e.value.file == "m.lasm"


def test_a_main_start_label_is_the_entry_and_a_library_has_none():
    p = link("x:      .data 0\nstart:  call num\n        call print\n        halt\n")
    assert p.entry == p.linkage.main + 1 == p.symbols["start"]
    assert run(p, "41").output == "41"
    with pytest.raises(ValueError, match="a library has no 'start' label"):
        link("halt\n", assemble("start: ret\n"))
    with pytest.raises(ValueError, match="differs from the base"):
        assemble("halt\n", alphabet=PRINTABLE_ALPHABET, base=LIB)


# ------------------------------------------------------------------ the compiler


def test_postfix_and_trees():
    assert to_postfix("(12+345)*6-78") == ("12", "345", "+", "6", "*", "78", "-")
    assert to_postfix("1 - 2 - 3") == ("1", "2", "-", "3", "-")      # left associative
    assert to_postfix("1 - (2 - 3)") == ("1", "2", "3", "-", "-")
    assert to_postfix("1 + 2 * 3") == ("1", "2", "3", "*", "+")      # * binds tighter
    assert parse_expr("1 - 2 * 3") == BinOp("-", Num("1"), BinOp("*", Num("2"), Num("3")))
    assert render(parse_expr("((1 + 2)) * (3 * 4)")) == "(1 + 2) * (3 * 4)"
    assert render(parse_expr("(1 * 2) + (3 - 4)")) == "1 * 2 + (3 - 4)"
    assert evaluate("2 * (3 + 4) - 5") == 9 and intermediates("2 * (3 + 4) - 5") == [7, 14, 9]
    assert evaluate("007") == 7 and intermediates("007") == []
    assert not is_valid("1 - 2 + 5") and is_valid("5 - 2")
    assert is_valid("123456 * 9999", 4) and not is_valid("123456 * 10000", 4)


@pytest.mark.parametrize("text, message", [
    ("", "empty expression"),
    ("   ", "empty expression"),
    ("1 +", "ends early: expected a number at position 3"),
    ("(1 + 2", "unclosed '\\(' at position 0"),
    ("1 + 2)", "unmatched '\\)' at position 5"),
    ("-1", "expected a number or '\\(' at position 0 .* found '-' \\(numbers have no sign\\)"),
    ("1 2", "expected an operator or '\\)' at position 2"),
    ("2 (3)", "expected an operator or '\\)' at position 2"),
    ("()", "expected a number or '\\(' at position 1 .* found '\\)'"),
    ("1 / 2", "unexpected character '/' at position 2"),
    ("12 plus 3", "unexpected character 'p' at position 3"),
    ("1 + \u0663", "unexpected character '\u0663' at position 4"),
])
def test_malformed_expressions(text, message):
    with pytest.raises(ValueError, match=message):
        parse_expr(text)


@PROPERTY
@given(expressions(max_digits=6), st.booleans())
def test_drawn_expressions_parse_back_and_keep_their_promises(expr, squeeze):
    tree = parse_expr(expr)
    assert render(tree) == expr and to_postfix(tree) == to_postfix(expr)
    text = expr.replace(" ", "") if squeeze else expr
    assert to_postfix(text) == to_postfix(expr) and evaluate(text) == evaluate(expr)
    assert is_valid(expr, 4) and min(intermediates(expr)) >= 0
    assert all(len(n) <= 6 for n in re.findall(r"[0-9]+", expr))


@pytest.mark.parametrize("parens", [False, True])
def test_draw_expression_counts_seeds_and_parentheses(parens):
    for ops in range(0, 10):
        text = draw_expression(random.Random(ops), ops, 12, parens)
        assert text == draw_expression(random.Random(ops), ops, 12, parens)
        assert sum(t in "+-*" for t in to_postfix(text)) == ops
        assert ("(" in text) == (parens and ops >= 2)
        assert is_valid(text, 4)


def test_calls_stack_depth_and_programs():
    assert postfix_calls("1 - (2 - 3)") == ["num", "num", "num", "sub", "sub", "print"]
    assert stack_depth(postfix_calls("1 - (2 - 3)")) == 3
    assert main_program("1") == "        call  num\n        call  print\n        halt\n"
    deep = "1 + " * 16 + "1"                       # left-deep: 2 values at most
    nested = "1 + (" * 16 + "1" + ")" * 16         # right-deep: 17 at once
    assert stack_depth(postfix_calls(deep)) == 2
    assert stack_depth(postfix_calls(nested)) == 17
    with pytest.raises(ValueError, match="library's stack has 16 entries"):
        main_program(nested)
    nested15 = "1 + (" * 15 + "1" + ")" * 15     # 16 values: the stack's capacity
    check_expression(nested15, nested15)
    with pytest.raises(ValueError, match="needs 2 value"):
        program_text(["num", "add"])
    with pytest.raises(ValueError, match="no library routine 'div'"):
        program_text(["num", "num", "div"])
    with pytest.raises(ValueError, match="unknown chain operation 'div'"):
        chain_calls(["div"])
    with pytest.raises(ValueError, match="is negative"):
        evaluate_chain(["sub"], [1, 2])


def test_out_size_covers_what_the_default_does_not():
    """Four squarings of a 10-digit number need more scratch than the loader's default
    for a 10-character prompt: ``out_size`` gives it, and the run faults without it."""
    calls = ["num"] + ["dup", "mul"] * 4 + ["print"]
    text = "1234567891"
    need = out_size(calls, text)
    assert need > default_out_size(len(text))
    result = run(link(program_text(calls)), text, out_size=need)
    assert result.output == str(1234567891 ** 16)
    with pytest.raises(MachineFault, match="outside memory"):
        run(link(program_text(calls)), text)


# ------------------------------------------------------------------ cost


def _big(rng: random.Random, digits: int) -> str:
    return str(rng.randint(1, 9)) + "".join(str(rng.randrange(10)) for _ in range(digits - 1))


def test_steps_at_eight_operations_of_a_hundred_digits():
    """The numbers the library header documents (printed with -s)."""
    rng = random.Random(0)
    drawn = [check_expression(draw_expression(rng, 8, 100, parens=bool(k % 2)))
             for k in range(40)]
    big = [_big(rng, 100) for _ in range(9)]
    full = {
        "sum": " + ".join(big),
        "differences": "9" * 100 + "".join(f" - {b[:99]}" for b in big[1:]),
        "products, small factor last": big[0] + " * 9999" * 8,
        "products, small factor first": "9999 * (" * 7 + f"9999 * {big[0]}" + ")" * 7,
    }
    measured = {k: check_expression(text) for k, text in full.items()}
    drawn.sort()
    print(f"\n8 ops x up to 100 digits, 40 draws: median {drawn[20]}, max {drawn[-1]} steps")
    for k, steps in measured.items():
        print(f"8 ops x 100 digits, {k}: {steps} steps")
    assert all(sum(t in "+-*" for t in to_postfix(text)) == 8 for text in full.values())
    assert drawn[-1] < 100_000 and max(measured.values()) < 300_000


# ------------------------------------------------------------------ machine, CLI, docs


def test_hard_machine_equals_interpreter_step_for_step():
    pytest.importorskip("torch")
    from llamacpu.machine.machine import run_program

    for main, prompt in ((main_program("(12 + 345) * 6 - 78"), "calculate (12+345)*6-78"),
                         (chain_program(["add", "rsub", "max"]), "1 and 2 from 9, max 4")):
        program = link(main)
        want = run(program, prompt, trace=True)
        got = run_program(program, prompt, trace=True)
        assert got.output == want.output and got.steps == want.steps
        assert got.trace == want.trace
        assert got.memory == want.memory


def test_run_cli_links(tmp_path, capsys):
    main = tmp_path / "main.lasm"
    main.write_text(main_program("(12 + 345) * 6 - 78"))
    lib = str(link_module.LIBRARY_DIR / "lib.lasm")
    assert run_main([str(main), "--link", lib, "--input", "(12 + 345) * 6 - 78"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "2064"
    main.write_text("call num\nnum: halt\n")
    assert run_main([str(main), "--link", lib, "--input", "1"]) == 2
    assert f"{main}:2:1: error: label 'num' is already defined in" in capsys.readouterr().err
    assert run_main([str(main), "--link", str(tmp_path / "none.lasm")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("module", [compose, link_module], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0
