"""See what a learned machine compiles a prompt to: ``python -m llamacpu.compile``.

    python -m llamacpu.compile --checkpoint checkpoints/stage_3 "what is 12 plus 35?"
    python -m llamacpu.compile --checkpoint checkpoints/stage_3 --run "12+35"

The controller's plan phase emits a program for the prompt; this prints it as ``.lasm``
text (the disassembler's, which ``python -m llamacpu.asm`` reads back), after a header of
comments: the prompt, the plan's confidence (``Controller.emit_scored``: the probability
of its least certain decision) and the expert program it equals, if any. ``--run`` then
runs the emitted program on the learned machine (the neural OEU and the learned execute
phase, as ``LearnedMachine.solve``) and prints the answer last.

A composed prompt ("calculate (12 + 345) * 6", "add 12 and 345, then multiply by 6")
plans the compile marker: the command then prints the compile phase's decisions (each
view and the compile head's action), and the main program of library calls they built
(``--run`` runs it linked to the library, docs/lasm.md).

A plan that is the decline program (the controller's "I have no program for this"), or
whose confidence is below ``--abstain-below``, is not run: the command prints
``cannot compile: ...`` and exits 1 (docs/wordings.md). Exit codes: 0 compiled (and, with
``--run``, halted without a fault); 1 cannot compile, or the run faulted or did not halt;
2 bad input (a flag, the checkpoint, a character outside the checkpoint's alphabet).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from llamacpu.cli import Parser, add_verbosity, setup_logging

__all__ = ["main", "expert_match"]


def expert_match(program) -> str | None:
    """The stem of the expert program that ``program`` equals (the same instructions after
    the two ports, the expert assembled in ``program``'s alphabet), or None: which task's
    program the controller recalled. Tasks whose program is written per prompt (fmap)
    never match."""
    from llamacpu.core.golden import load_program
    from llamacpu.learn.tasks import TASKS

    places = dict.fromkeys((t.program, t.directory) for t in TASKS.values()
                           if t.program_for is None)
    for stem, directory in places:
        if load_program(stem, directory, program.alphabet).slots[2:] == program.slots[2:]:
            return stem
    return None


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m llamacpu.compile", description=__doc__.splitlines()[0])
    p.add_argument("prompt", nargs="?", default=None,
                   help="the request, as a user types it (or use --input-file)")
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoints/stage_N dir")
    p.add_argument("--input-file", default=None, metavar="PATH",
                   help="read the prompt from PATH ('-': standard input), for prompts longer "
                        "than a command line takes; one trailing newline is dropped")
    p.add_argument("--run", action="store_true",
                   help="run the emitted program on the learned machine and print the answer")
    p.add_argument("--abstain-below", type=float, default=None, metavar="T",
                   help="do not run a plan whose confidence is below T (in [0, 1]): say "
                        "cannot compile instead (default: only the decline program is)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="machine steps the run may take (default: a bound from the prompt's "
                        "length that every curriculum task's program fits)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (at least 1)")
    add_verbosity(p)
    a = p.parse_args(argv)
    setup_logging(a.verbose, a.quiet)
    p.check_threads(a.threads)
    if (a.prompt is None) == (a.input_file is None):
        p.error("give the prompt either as an argument or with --input-file, not both")
    if a.abstain_below is not None and not 0.0 <= a.abstain_below <= 1.0:
        p.error(f"--abstain-below must be in [0, 1], got {a.abstain_below}")
    if a.max_steps is not None and a.max_steps < 1:
        p.error(f"--max-steps must be at least 1, got {a.max_steps}")
    if not a.checkpoint.is_dir():
        p.error(f"--checkpoint {a.checkpoint}: no such checkpoint directory")
    from llamacpu.run import read_input

    try:
        prompt = a.prompt if a.input_file is None else read_input(None, a.input_file)
    except OSError as e:
        p.error(f"--input-file {a.input_file}: cannot read it: {e.strerror or e}")
    except UnicodeDecodeError as e:
        p.error(f"--input-file {a.input_file}: not UTF-8 text (byte {e.start})")

    import torch

    from llamacpu.core.compose import program_text
    from llamacpu.core.disasm import disassemble
    from llamacpu.core.isa import LlamacpuError
    from llamacpu.core.link import main_calls
    from llamacpu.learn.compiling import is_compile
    from llamacpu.learn.evaluation import load_checkpoint_machine
    from llamacpu.learn.solution import is_decline
    torch.set_num_threads(a.threads)
    try:
        c, model = load_checkpoint_machine(a.checkpoint)
        model.check_prompts([prompt])  # a character outside its alphabet: one clear line
        programs, confidence = model.controller.emit_scored([prompt])
    except (LlamacpuError, ValueError, OSError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    program, conf = programs[0], float(confidence[0])
    match = expert_match(program)
    print(f"; compiled by {a.checkpoint} (stage {c.stage}) from: {prompt!r}")
    print(f"; plan confidence {conf:.4f}; "
          + (f"equals the expert program {match}.lasm" if match
             else "equals no expert program"))
    if is_decline(program):
        print("cannot compile: the controller emitted the decline program (no program of "
              "this machine does what the prompt asks)")
        return 1
    if a.abstain_below is not None and conf < a.abstain_below:
        print(f"cannot compile: plan confidence {conf:.4f} is below --abstain-below "
              f"{a.abstain_below:g}")
        return 1
    if is_compile(program):  # a composed prompt: the compile phase builds the program
        decisions: list = []
        built, failed = model.build([prompt], [program], trace=decisions)
        print("; the plan is the compile marker: the compile head built this main program, "
              "one decision per view")
        for d in decisions:
            print(f";   {d.view}  ->  {d.action}")
        if failed:
            print(f"cannot compile: {failed[0]}")
            return 1
        program = built[0]
        lib = program.linkage
        print(f"; linked to {Path(lib.library).name} ({lib.main - 2} slots: "
              f"{', '.join(lib.routines)}), which it calls")
        print(program_text(main_calls(program)), end="")
    else:
        print(disassemble(program), end="")
    if not a.run:
        return 0
    solution = model.run_programs([prompt], [program], a.max_steps)[0]  # not planned again
    if solution.fault is not None or not solution.halted:
        print(f"; run: {solution.steps} steps, "
              + (f"fault: {solution.fault}" if solution.fault else "did not halt"))
        return 1
    print(f"; run: {solution.steps} steps, answer:")
    print(solution.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
