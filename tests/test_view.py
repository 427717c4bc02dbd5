"""The controller's bounded view of a prompt (llamacpu.llm.view): one lexer for every task.

What it must give: a prompt of any length has a view that the task's training lengths
produce (so the LM never meets one it did not train on), the views of different programs
never coincide (so the plan can tell them apart), the code a prompt carries (a function's
definitions) reaches the LM whole, and checkpoints written before the view keep theirs.
"""

from __future__ import annotations

import random
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as hs

from llamacpu.learn.curriculum import STAGES, trained_tasks
from llamacpu.learn.learned import LearnedConfig
from llamacpu.learn.tasks import TASKS, Operands, function_table
from llamacpu.llm.config import ControllerConfig
from llamacpu.llm.view import PromptView, controller_view

VIEW = PromptView()  # the default: digits 3, items 4, chars 4, operands 3, content abstracted
LONGEST = trained_tasks(len(STAGES) - 1)  # {task: its longest trained length}
# A composed prompt's view is bounded by the operand window (its operations, not its
# lengths, grow): tested on its own below, at 1-8 operations.
COMPOSED = (Operands.EXPRESSION, Operands.CHAIN)
BOUNDED = sorted(t for t in LONGEST
                 if TASKS[t].operands is not Operands.FUNCTION and TASKS[t].operands not in COMPOSED)
COMPOSED_TASKS = sorted(t for t in TASKS if TASKS[t].operands in COMPOSED)


def _draw(task: str, rng: random.Random, length: int, template: str):
    t = TASKS[task]
    ops = t.draw(rng, length, t.edge_rate)
    if t.fit is not None:
        ops = t.fit(ops) or ops
    return t.make(ops, template)


def _views(task: str, template: str, lengths, draws: int, seed: int = 0) -> set[str]:
    rng = random.Random(seed)
    return {VIEW(_draw(task, rng, n, template).prompt) for n in lengths for _ in range(draws)}


# ----------------------------------------------------------------------- the lexer


@given(hs.text(alphabet="0123456789 +ab?", max_size=40), hs.integers(0, 5))
def test_the_digit_window_is_the_view_with_only_digits_bounded(prompt, k):
    """``PromptView.digit_window(k)`` (what checkpoints from before the other windows load
    as) is the old rule exactly: each digit run cut to its first k digits."""
    old = prompt if k == 0 else re.sub(rf"\d{{{k + 1},}}", lambda m: m.group()[:k], prompt)
    assert controller_view(prompt, k) == PromptView.digit_window(k)(prompt) == old


@given(hs.text(alphabet="0123456789 ,:+ab>;", max_size=60))
@settings(max_examples=300, deadline=None)
def test_every_payload_is_bounded_and_the_view_is_stable(prompt):
    """Whatever is typed: no digit run longer than the digit window, no list of numbers
    longer than the item window, no text payload longer than the text window (unless the
    ':' opens a function table), only '0' for digits, and the view of a view is itself."""
    v = VIEW(prompt)
    assert VIEW(v) == v
    head, colon, rest = v.partition(":")
    table = bool(colon) and re.match(r" *\d>\d(?: \d>\d)+(?!\d)", rest)
    if colon and not table:
        assert len(rest.lstrip(" ")) <= VIEW.chars and set(rest.lstrip(" ")) <= {"_"}
        assert VIEW(prompt.partition(":")[0]) == head        # the wording, lexed alone
    scanned = v if table or not colon else head
    plain = re.sub(r"(?<!\d)\d>\d(?!\d)", "#", scanned)     # definitions are kept as typed
    assert all(len(r) <= VIEW.digits and set(r) == {"0"} for r in re.findall(r"\d+", plain))
    assert all(len(re.split(r", ?| ", m)) <= VIEW.items
               for m in re.findall(r"\d+(?:(?:, ?| )\d+)+", plain))


def test_examples_of_each_payload_kind():
    assert VIEW("what is 1234567 plus 89?") == "what is 000 plus 00?"
    assert VIEW("sort 3, 1, 4, 1, 5, 9") == "sort 0, 0, 0, 0"
    assert VIEW("reverse the text:  hello world") == "reverse the text:  ____"
    assert VIEW("f: 3>9 0>3 ; apply f to 40917") == "f: 3>9 0>3 ; apply f to 000"
    keep = PromptView(abstract=False)
    assert keep("sort 3, 1, 4, 1, 5, 9") == "sort 3, 1, 4, 1"
    assert keep("copy: hello world") == "copy: hell"
    with pytest.raises(ValueError, match="items window must be >= 0"):
        PromptView(items=-1)


# ----------------------------------------------------------------------- on the tasks


@pytest.mark.parametrize("task", BOUNDED)
def test_a_prompt_of_any_length_has_a_view_training_covered(task):
    """The point of the view: for every wording, the views of prompts 41-500 symbols long
    (and 100-digit numbers) are among the views of the task's own trained lengths."""
    t = TASKS[task]
    top = LONGEST[task]
    for template in t.templates("train") + t.templates("heldout"):
        trained = _views(task, template, range(1, top + 1), draws=12)
        long = _views(task, template, (41, 100, 250, 500), draws=3, seed=1)
        assert long <= trained, (template, sorted(long - trained)[:3])
        # and few: the view keeps each payload's length up to its window, nothing else
        assert len(trained) <= (VIEW.digits ** 2 if t.operands is Operands.NUMBERS else
                                max(VIEW.items, VIEW.chars, VIEW.digits))


@pytest.mark.parametrize("task", COMPOSED_TASKS)
def test_a_composed_prompt_of_any_length_has_a_view_training_covered(task):
    """The operand window: prompts of 1-8 operations over numbers of 1-100 digits have views
    among those of the composed stages' training draws (at most two operations, at most 4
    digits), in every wording; the window leaves every other task's prompts as they were
    (they have at most two numbers: the test above)."""
    t = TASKS[task]
    rng = random.Random(3)
    for template in t.templates("train") + t.templates("heldout"):
        trained = {VIEW(t.make(t.draw_operands(rng, n, ops=k), template).prompt)
                   for n in range(1, 5) for k in (1, 2) for _ in range(150)}
        long = {VIEW(t.make(t.draw_operands(rng, n, ops=k), template).prompt)
                for n in (3, 20, 100) for k in (1, 2, 4, 8) for _ in range(4)}
        assert long <= trained, (template, sorted(long - trained)[:3])
        # one operation: lengths to the digit window; more: the two operators only
        kinds = 3 if t.operands is Operands.EXPRESSION else 4  # + - * / add sub mul rsub
        assert len(trained) <= kinds * VIEW.digits ** 2 + kinds ** 2
    windowed = VIEW(t.make(t.draw_operands(rng, 100, ops=8), t.train_templates[0]).prompt)
    assert windowed.count("0") == VIEW.operands and not set("()") & set(windowed)


def test_views_of_different_programs_never_coincide():
    """Two tasks whose prompts share a view would need one plan to emit two programs. (A
    composed prompt that is another task's prompt, "add 12 and 35", is planned as that
    task's program: ``compiling.recalled_by``.)"""
    from llamacpu.learn.compiling import recalled_by

    owner: dict[str, str] = {}
    for task in sorted(LONGEST):
        t = TASKS[task]
        for template in t.templates("train") + t.templates("heldout"):
            rng = random.Random(0)
            for n in range(1, LONGEST[task] + 2):
                for _ in range(6):
                    ex = _draw(task, rng, n, template)
                    plan = recalled_by(ex) or task
                    v = VIEW(ex.prompt)
                    assert owner.setdefault(v, plan) == plan, (v, owner[v], plan)


def test_a_function_table_reaches_the_lm_whole():
    """fmap's definitions are code (the plan writes them into a WEIGHTS slot): every
    wording's view keeps the table exactly, while its payload digits are bounded."""
    rng = random.Random(3)
    t = TASKS["fmap"]
    for template in t.templates("train") + t.templates("heldout"):
        ex = _draw("fmap", rng, 60, template)
        v = VIEW(ex.prompt)
        defs = re.findall(r"\d>\d", v)
        assert function_table(" ".join(defs)) == function_table(ex.operands[0]), template
        assert "0" * VIEW.digits in v and ex.operands[1] not in v


# ------------------------------------------------------------------ config and loading


def test_checkpoints_from_before_the_view_keep_reading_payloads_whole():
    d = LearnedConfig().to_json()
    c = LearnedConfig.from_json(d).controller
    assert c.view == PromptView(3, 4, 4, True) == VIEW
    del d["controller"]["operand_window"]
    assert LearnedConfig.from_json(d).controller.view == PromptView(3, 4, 4, True, operands=0)
    for key in ("item_window", "text_window", "abstract_payload"):
        del d["controller"][key]
    assert LearnedConfig.from_json(d).controller.view == PromptView.digit_window(3)
    del d["controller"]["digit_window"]
    assert LearnedConfig.from_json(d).controller.view == PromptView.digit_window(0)
    with pytest.raises(ValueError, match="chars window"):
        ControllerConfig(text_window=-2)


def test_the_training_flags_set_the_view():
    from llamacpu.train import parse_args

    cfg = parse_args(["--stage", "0", "--item-window", "2", "--text-window", "0",
                      "--keep-payload"]).model_config().controller
    assert cfg.view == PromptView(3, 2, 0, False)
    assert parse_args(["--stage", "0"]).model_config().controller.view == VIEW
    assert parse_args(["--stage", "0", "--operand-window", "0"]).model_config(
        ).controller.view == PromptView(operands=0)


def test_the_lm_reads_a_500_character_prompt_as_a_short_one():
    """The controller's input embeddings of long prompts equal those of short prompts of
    the same wording (token for token), for lists, text payloads and numbers."""
    from llamacpu.learn.learned import LearnedMachine

    ctl = LearnedMachine(LearnedConfig(ControllerConfig(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64))).controller.eval()
    rng = random.Random(5)
    pairs = []
    for task, template in (("sort", "sort {items_comma}"), ("copy", "copy: {text}"),
                           ("reverse_string", "reverse the bits: {text}")):
        long, short = _draw(task, rng, 500, template), _draw(task, rng, 9, template)
        pairs.append((long.prompt, short.prompt))
    digits = "".join(rng.choice("0123456789") for _ in range(900))
    pairs.append((TASKS["add"].make((digits[:500], digits[500:])).prompt,
                  TASKS["add"].make(("123456789", "98765")).prompt))
    with torch.no_grad():
        a = ctl._prompt([p for p, _ in pairs], "plan")
        b = ctl._prompt([p for _, p in pairs], "plan")
    for x, y in zip(a, b):
        assert torch.equal(x, y)


# ------------------------------------------------------------------ every view, certified


@pytest.mark.parametrize("task", ["add", "sub", "sort", "copy", "binary_addition"])
def test_every_view_is_every_view_a_prompt_of_any_length_has(task):
    """``every_view`` gives one prompt per view of the wordings; fresh prompts of any
    length (1-300) all have one of those views; shapes no draw produced are named."""
    from llamacpu.learn.controller_tables import every_view

    vs = every_view(task, VIEW, ("train", "heldout"))
    got = [VIEW(e.prompt) for e in vs.examples]
    assert len(set(got)) == len(got) == vs.grid - len(vs.missing) > 0
    t = TASKS[task]
    rng = random.Random(9)
    for _ in range(300):
        template = rng.choice(t.templates("train") + t.templates("heldout"))
        assert VIEW(_draw(task, rng, rng.randint(1, 300), template).prompt) in set(got)
    if task == "sub":  # A >= B: a subtrahend written longer than the minuend never occurs
        assert vs.missing and all(len(a) < len(b) for a, b in
                                  (re.findall(r"\d+", m)[:2] for m in vs.missing))
    else:
        assert not vs.missing
    with pytest.raises(ValueError, match="too many to enumerate"):
        every_view(task, PromptView(abstract=False))
    with pytest.raises(ValueError, match="function table"):
        every_view("fmap", VIEW)
    for composed in ("expr", "chain"):
        with pytest.raises(ValueError, match="operand window"):
            every_view(composed, PromptView(operands=0))


@pytest.mark.parametrize("task", COMPOSED_TASKS)
def test_every_view_of_a_composed_task_covers_every_number_of_operations(task):
    """Through the operand window a composed task's wordings have a few hundred views:
    ``every_view`` draws one prompt per view at one and two operations, and fresh prompts
    of 1-8 operations and up to 100 digits have one of them. The shapes never drawn are
    subtractions of a longer number from a shorter one and, with ``combinations="trained"``,
    the chain's held-out combination (rsub right after mul) in its first two steps."""
    from llamacpu.learn.compiling import held_out_combination
    from llamacpu.learn.controller_tables import every_view

    t = TASKS[task]
    vs = every_view(task, VIEW, ("train",))
    got = {VIEW(e.prompt) for e in vs.examples}
    assert len(got) == len(vs.examples) == vs.grid - len(vs.missing) > 100
    rng = random.Random(4)
    for _ in range(200):
        ops = t.draw_operands(rng, rng.choice((1, 4, 20, 100)), ops=rng.choice((1, 2, 4, 8)))
        assert VIEW(t.make(ops, rng.choice(t.train_templates)).prompt) in got
    for m in vs.missing:  # one operation, numbers of two lengths (a - b with b longer)
        a, b = re.findall(r"\d+", m)
        assert len(a) != len(b), m
    trained = every_view(task, VIEW, ("train",), combinations="trained")
    assert not any(held_out_combination(e) for e in trained.examples)
    lost = set(trained.missing) - set(vs.missing)
    if task == "chain":
        assert lost and all("result" in m for m in lost), sorted(lost)
    else:  # '-' after a product is drawn as a * (b - c) as well, which trains it
        assert not lost


def test_certify_checks_every_view_of_the_wordings(stage0, tmp_path):
    """``python -m llamacpu.certify --views all`` on a checkpoint with the bounded view:
    the controller certificate covers every view of add's wordings (90, all drawn)."""
    import json

    from llamacpu.certify import main

    out, _, _ = stage0
    path = tmp_path / "c.json"
    code = main(["--checkpoint", str(out / "stage_0"), "--wordings", "all", "--json",
                 str(path), "--witnesses", "0"])
    rec = json.loads(path.read_text())["controller"]
    assert rec["enumerated"] and rec["views"] == 90 == rec["views_per_task"]["add"]["views"]
    assert rec["views_per_task"]["add"]["never_drawn"] == []
    assert code == (0 if rec["certified"] else 1)
