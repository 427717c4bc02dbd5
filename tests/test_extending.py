"""Adding an opcode without touching a library file (docs/extending.md, "Adding an opcode").

A fixture defines ``AVG d, a, b: d ← (a + b) div 2`` on digits through ``isa.defined_op``;
a small program using it then runs on the reference interpreter (traced and fast paths)
and on the hard machine (the discrete path and the straight-through dense step), which
agree with each other step by step; after the fixture the op is gone again.
"""

from __future__ import annotations

import pytest
import torch

from llamacpu.core.asm import AssemblyError, assemble
from llamacpu.core.interp import MachineFault, read_output, run
from llamacpu.core.isa import MNEMONICS, OPS, SPEC, Group, Role, defined_op, n_ops
from llamacpu.machine.machine import Machine, MachineConfig

AVG_PAIRS = """
; avg.lasm: the average (rounded down) of each pair of digits, e.g. "2468" -> "37"
.alphabet base 10
start:  lea   i, [IN]
        lea   o, [OUT]
loop:   jeq   [i], #END, done       ; an even number of digits
        mov   a, [i]
        inc   i
        avg   [o], a, [i]           ; the new op: [o] ← (a + [i]) div 2
        inc   i
        inc   o
        jmp   loop
done:   halt

i:      .data 0
o:      .data 0
a:      .data 0
"""

CASES = [("2468", "37"), ("09", "4"), ("", ""), ("99113355", "9135")]


def _avg(a: int, b: int, carry: int, base: int) -> tuple[int, int]:
    return (a + b) // 2, carry


@pytest.fixture
def avg():
    """The op AVG, defined for one test and removed after it."""
    with defined_op("AVG", (Role.DST, Role.SRC, Role.SRC), _avg, "d ← (a + b) div 2",
                    group=Group.ARITH, digits=True) as spec:
        yield spec


def _outcome(r):
    if r.fault is not None:
        return ("fault", r.fault, r.pc, r.steps)
    return ("ok", r.output, r.steps, r.trace, r.memory, r.carry)


def _reference(program, text):
    try:
        r = run(program, text, trace=True)
    except MachineFault as e:
        return ("fault", e.reason, e.pc, e.step)
    return ("ok", r.output, r.steps, r.trace, r.memory, r.carry)


def test_the_op_is_in_the_table_only_while_defined(avg):
    assert avg.op == len(OPS) == 27 and avg.mnemonic == "AVG" and n_ops() == 28
    assert SPEC[avg.op] is avg and MNEMONICS["AVG"] == avg.op


def test_interpreter_runs_the_new_op_on_both_paths(avg):
    program = assemble(AVG_PAIRS)
    for text, want in CASES:
        fast, traced = run(program, text), run(program, text, trace=True)
        assert fast.output == traced.output == want
        assert (fast.steps, fast.memory, fast.carry) == (traced.steps, traced.memory,
                                                          traced.carry)
    step = next(t for t in run(program, "24", trace=True).trace if t.op == avg.op)
    assert step.values[1:] == (2, 4) and step.result == 3


def test_hard_machine_agrees_with_the_interpreter_step_by_step(avg):
    program = assemble(AVG_PAIRS)
    machine = Machine(MachineConfig())
    texts = [t for t, _ in CASES] + ["2a"]                     # "2a": AVG faults on 'a'
    results = machine.run_batch([program] * len(texts), texts, trace=True, keep_memory=True)
    for text, r in zip(texts, results):
        assert _outcome(r) == _reference(program, text), text
    assert [r.output for r in results[:len(CASES)]] == [w for _, w in CASES]
    assert results[-1].fault.startswith("AVG operand 3 is ")   # the symbol of "a"


def test_straight_through_dense_step_runs_the_new_op(avg):
    program = assemble(AVG_PAIRS)
    machine = Machine(MachineConfig())
    texts = [t for t, _ in CASES]
    state = machine.load_batch([program] * len(texts), texts, dtype=torch.float64)
    state = state._replace(memory=state.memory.requires_grad_())  # autograd: the dense path
    state = machine.run(state, max_steps=64, hard=True)
    assert bool((state.halted > 0.5).all()) and not bool((state.fault > 0.5).any())
    for memory, (text, want) in zip(machine.decode_memory(state), CASES):
        assert "".join(map(str, read_output(memory, program.alphabet))) == want, text
    state.memory.sum().backward()                               # differentiable throughout


def test_after_the_fixture_the_op_is_gone():
    with defined_op("AVG", (Role.DST, Role.SRC, Role.SRC), _avg, "d ← (a + b) div 2",
                    digits=True):
        assert run(assemble(AVG_PAIRS), "68").output == "7"
    assert "AVG" not in MNEMONICS and n_ops() == len(OPS) == 27 and 27 not in SPEC
    with pytest.raises(AssemblyError, match="unknown op .AVG."):
        assemble(AVG_PAIRS)
    assert Machine(MachineConfig()).n_ops == 27


def test_define_op_checks_its_arguments():
    with pytest.raises(ValueError, match="already defined"):
        with defined_op("ADD", (Role.DST, Role.SRC, Role.SRC), _avg, "d ← a"):
            pass
    with pytest.raises(ValueError, match="roles"):
        with defined_op("PTRX", (Role.PTR, Role.SRC), _avg, "d ← a"):
            pass
    assert n_ops() == 27


# ---------------------------------------------------------------------------- a task
#
# Adding a task (docs/extending.md, "Adding a task"): a task is one file, <task>.py beside
# its expert program <task>.lasm, in programs/ or in a directory of one's own; training on
# it is one line of the curriculum. "double" here is twice a number.

DOUBLE_LASM = """\
; double.lasm: twice a decimal number.
;
; Input    free text holding a decimal number A: the first maximal run of digits; every
;          other symbol is ignored. A may have leading zeros.    e.g. "double 479"
; Output   2·A in decimal without leading zeros ("0" for zero).    e.g. "958"
;
; Approach add.lasm with B = A: a room of len A + 1 zeros at the start of the output
;          region, then one column per room slot, right to left, [w] ← 2·a + C.

.alphabet base 10

start:  lea   a, edge               ; a scans the text, from the slot before it
        lea   w, [OUT]              ; w → the room; moves once per digit read
skip:   inc   a                     ; skip non-digits to A's first digit
        lt    t, [a], #' '          ; [p] < ' ' holds exactly for the digits
        jz    t, skip
room:   mov   [w], #0               ; one room slot per digit of A
        inc   w
        inc   a
        lt    t, [a], #' '
        jnz   t, room               ; a → the first non-digit after A
        mov   [w], #0               ; and one more: 2·A has at most len A + 1 digits
        inc   w

col:    dec   w                     ; next column, right to left
        jeq   [w], #END, strip      ;   past the room: every column is done
        dec   a
        lt    t, [a], #' '          ;   A used up? Then read the room's 0 from now on
        jnz   t, a_ok
        lea   a, [w]
a_ok:   add   [w], [a], [a]         ;   [w] ← 2·a + C (mod 10), C ← carry
        jmp   col

strip:  jnz   [OUT], done           ; skip the leading zeros
        inc   OUT
        jne   [OUT], #END, strip
        dec   OUT                   ; all zeros: keep the last one, "0"
done:   halt

a:      .data 0                     ; → scans the text; current digit of A, then the room
w:      .data 0                     ; → current digit of the answer
t:      .data 0                     ; scratch flag
edge:   .data END                   ; the slot before the input: a non-digit
"""

DOUBLE_PY = '''\
"""double: twice a number; the expert is double.lasm beside this file."""

from __future__ import annotations

import random

from llamacpu.learn.tasks import Operands, Task, edge_case, number, pad


def draw(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """A of ``length`` digits; edge cases: a carry chain (5…5, 9…9), leading zeros."""
    cases = [lambda: ("5" * length,), lambda: ("9" * length,)]
    if length > 1:
        cases.append(lambda: (pad(number(rng, rng.randint(1, length - 1)), length),))
    return edge_case(rng, edge_rate, cases) or (number(rng, length),)


def solve(ops: tuple[str, ...]) -> str:
    """2·A."""
    return str(2 * int(ops[0]))


TASK = Task(
    "double", "double", Operands.NUMBERS,
    train_templates=("double {a}", "twice {a}", "what is {a} doubled?", "{a} times two"),
    heldout_templates=("how much is twice {a}?", "{a} plus itself"),
    draw=draw, solve=solve, out_size=lambda ops: len(ops[0]) + 2, arity=1,
    description="twice a decimal number")
'''


@pytest.fixture
def task_dir(tmp_path):
    """A directory holding one task, double: its expert program and its description."""
    (tmp_path / "double.lasm").write_text(DOUBLE_LASM, encoding="utf-8")
    (tmp_path / "double.py").write_text(DOUBLE_PY, encoding="utf-8")
    return tmp_path


def test_a_task_from_a_directory(task_dir):
    """The task loads from its directory, and its expert program answers its Python answer
    on sampled examples in every training and held-out wording, at exactly its out_size."""
    import random

    from llamacpu.learn.tasks import SPLITS, TASKS, load_tasks

    tasks = load_tasks(task_dir)
    assert list(tasks) == ["double"] and "double" not in TASKS  # nothing global changed
    double = tasks["double"]
    assert double.directory == task_dir.resolve() and double.unit == "digits"
    rng = random.Random("double")
    for split in SPLITS:
        for template in double.templates(split):
            for length in range(1, 7):
                for _ in range(3):
                    ex = double.make(double.draw(rng, length, 0.5), template)
                    assert ex.answer == str(2 * int(ex.operands[0])) and ex.length == length
                    result = run(double.expert_program(ex), ex.prompt,
                                 out_size=double.out_size(ex.operands))
                    assert result.output == ex.answer == double.reference(ex.prompt), ex
        ex = double.sample(rng, 4, split)
        assert ex.template in double.templates(split) and ex.length == 4


def test_a_curriculum_stage_on_the_task_is_one_line(task_dir, monkeypatch):
    """With the task known (here put into TASKS; LLAMACPU_TASKS=<dir> does it for a
    process), a stage on it is the one line ``Stage(...)``, and the curriculum draws its
    batches, held-out eval set and expert supervision."""
    import random

    from llamacpu.learn import tasks as tasks_module
    from llamacpu.learn.curriculum import STAGES, Stage, check_stages, eval_set, sample_batch

    monkeypatch.setitem(tasks_module.TASKS, "double", tasks_module.load_tasks(task_dir)["double"])
    stage = Stage(len(STAGES), "double4", "double", 1, 4, 0.25, 210, "double up to 4 digits")
    stages = (*STAGES, stage)
    check_stages(stages)
    batch = sample_batch(stage, random.Random(0), 16, stages)
    assert {e.task for e in batch} >= {"double"} and len(batch) == 16
    held = eval_set(stage, seed=0, size=20)
    assert len(held) == 20 and all(e.task == "double" for e in held)
    assert not {e.prompt for e in held} & {e.prompt for e in batch}
    run_ = tasks_module.expert(held[0])
    assert run_.result.output == held[0].answer and run_.result.steps <= stage.max_steps / 1.25


def test_llamacpu_tasks_names_the_directory_for_a_whole_process(task_dir):
    """``LLAMACPU_TASKS=<dir>`` adds the directory's tasks to TASKS in every command; a
    stage line naming an unknown task says where tasks come from."""
    import os
    import subprocess
    import sys

    code = ("from llamacpu.learn.tasks import TASKS, reference\n"
            "from llamacpu.learn.curriculum import Stage\n"
            "Stage(14, 'double4', 'double', 1, 4, 0.25, 210, 'double up to 4 digits')\n"
            "print('double' in TASKS, reference('double', 'twice 0479'))\n")
    env = {**os.environ, "LLAMACPU_TASKS": str(task_dir)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "958"]
    env["LLAMACPU_TASKS"] = ""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "unknown task 'double'" in out.stderr
    assert "LLAMACPU_TASKS" in out.stderr


def test_load_tasks_names_what_a_task_file_lacks(task_dir):
    from llamacpu.learn.tasks import TaskError, load_tasks

    (task_dir / "triple.py").write_text(DOUBLE_PY, encoding="utf-8")
    with pytest.raises(TaskError, match="TASK is named 'double'"):
        load_tasks(task_dir)
    (task_dir / "triple.py").write_text("X = 1\n", encoding="utf-8")
    with pytest.raises(TaskError, match="defines TASK"):
        load_tasks(task_dir)
    (task_dir / "triple.py").unlink()
    (task_dir / "double.lasm").unlink()
    with pytest.raises(TaskError, match="no expert program double.lasm"):
        load_tasks(task_dir)
