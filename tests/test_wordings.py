"""Wordings by construction: every task's grammar, its splits, and that its wordings run.

The splits' promises (learn/wordings.py): new_words wordings have a new part and the others
none; recombined and train never share a wording, and every part of a recombined wording
occurs in some training wording; the hand-written training templates stay in training and
the held-out ones out of it. Every wording the grammar gives a task reads its operands as
the task's program does: sampled wordings run on the interpreter and answer as Python.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamacpu.core.interp import run
from llamacpu.core.isa import DEFAULT_ALPHABET, PRINTABLE_ALPHABET, Alphabet
from llamacpu.learn.tasks import GRAMMAR_SPLITS, TASKS, TaskError, default_out_size
from llamacpu.learn.train_config import resolve_split
from llamacpu.learn.wordings import Frame, Grammar

GRAMMAR_TASKS = sorted(n for n, t in TASKS.items() if t.grammar is not None)


def test_every_task_has_a_grammar_with_enough_wordings_in_each_split():
    assert GRAMMAR_TASKS == sorted(TASKS)
    for name in GRAMMAR_TASKS:
        splits = Counter(w.split for w in TASKS[name].grammar_wordings())
        assert splits["recombined"] >= 20 and splits["new_words"] >= 100, (name, splits)
        assert sum(splits.values()) >= 150, (name, splits)


@pytest.mark.parametrize("name", GRAMMAR_TASKS)
def test_the_splits_keep_their_promises(name):
    task = TASKS[name]
    words = task.grammar_wordings()
    by = {s: [w for w in words if w.split == s] for s in ("train", "recombined", "new_words")}
    assert all(w.new for w in by["new_words"]) and not any(w.new for w in by["train"])
    assert not any(w.new for w in by["recombined"])
    trained = set().union(*(w.parts for w in by["train"]))
    for w in by["recombined"]:
        assert w.parts <= trained, (w.text, w.parts - trained)
    texts = [w.text for w in words]
    assert len(texts) == len(set(texts))
    split_of = {w.text: w.split for w in words}
    assert all(split_of.get(t, "train") == "train" for t in task.train_templates)
    assert all(split_of.get(t, "recombined") != "train" for t in task.heldout_templates)
    assert task.grammar_wordings() == words  # stable: a hash, not a process's random state


@pytest.mark.parametrize("name", GRAMMAR_TASKS)
def test_every_wording_is_a_valid_template(name):
    task = TASKS[name]
    for w in task.grammar_wordings():
        task._check_template(w.text)  # raises on a malformed wording


@pytest.mark.parametrize("name", GRAMMAR_TASKS)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_sampled_wordings_run_and_answer_as_python(name, data):
    task = TASKS[name]
    split = data.draw(st.sampled_from(("train", *GRAMMAR_SPLITS)))
    pool = [w.text for w in task.grammar_wordings() if w.split == split]
    template = data.draw(st.sampled_from(pool))
    seed = data.draw(st.integers(0, 2**16))
    length = data.draw(st.integers(1, 2 if task.max_length == 2 else 6))
    ex = task.make(task.draw(random.Random(seed), length, 0.3), template)
    out = run(task.expert_program(ex), ex.prompt, out_size=default_out_size(ex))
    assert out.output == ex.answer, (ex.prompt, out.output, ex.answer)


def test_templates_of_the_grammar_splits_and_a_task_without_a_grammar():
    add = TASKS["add"]
    recombined = add.templates("recombined")
    assert recombined and set(recombined).isdisjoint(add.train_templates)
    assert "what do you get when you add {b} to {a}" in add.templates("new_words")
    # sub's program reads the minuend first: wordings naming b first are not sub's (yet)
    assert not any(w.order == "ba" for w in TASKS["sub"].grammar_wordings())
    bare = dataclasses.replace(add, grammar=None)
    with pytest.raises(TaskError, match="no grammar"):
        bare.templates("recombined")
    with pytest.raises(ValueError, match="split must be one of"):
        add.templates("nope")


def test_new_frames_are_the_new_words_wordings_in_structures_training_never_saw():
    for name in ("add", "foreign_numbers"):
        task = TASKS[name]
        def frame(w):
            return next(p for p in w.parts if p.startswith("frame:"))
        seen = {frame(w) for w in task.grammar_wordings() if w.split == "train"}
        new_frames = task.templates("new_frames")
        assert new_frames and set(new_frames) < set(task.templates("new_words"))
        by_text = {w.text: w for w in task.grammar_wordings()}
        assert all(by_text[t].new_frame and frame(by_text[t]) not in seen for t in new_frames)
    # for the decline tasks: requests of families the machine never trained to decline
    numbers = TASKS["foreign_numbers"].templates("new_frames")
    assert any(t.startswith("divide {a} by {b}") for t in numbers)
    assert not any("power" in t for t in numbers)


def test_templates_names_the_hand_written_training_wordings_whatever_a_run_trained_on():
    grammar_run = {"train": {"wordings": "grammar"}}
    assert resolve_split("train", grammar_run) == "grammar_train"
    assert resolve_split("templates", grammar_run) == "train"
    assert resolve_split("train", {}) == resolve_split("templates", {}) == "train"
    assert resolve_split("recombined", grammar_run) == "recombined"


def test_capitals_appear_only_where_the_alphabet_has_them():
    g = Grammar(frames=("<v> {a} and {b}",), words={"v": ("add", "sum")})
    lower = {w.text for w in g.wordings(Alphabet.numeric(10))}
    assert lower and not any(c.isupper() for t in lower for c in t)
    wide = Alphabet(base=10, charset=" +-*/%=<>,;:.()?!_abcdefghijklmnopqrstuvwxyzAS")
    texts = {w.text for w in g.wordings(wide)}
    assert "Add {a} and {b}" in texts and "Sum {a} and {b}." in texts
    assert lower < texts


@pytest.mark.parametrize("name", GRAMMAR_TASKS)
def test_printable_wordings_add_capitals_and_keep_every_split(name):
    """In the printable alphabet a task has its default wordings, each in the same split,
    and their capitalised forms, each in the split of its as-written form (case never
    separates training from evaluation: a held-out template's capitalised form is held out
    too); the splits keep their promises, and every wording is a template of the task."""
    task = TASKS[name]
    lower = {w.text: w.split for w in task.grammar_wordings(DEFAULT_ALPHABET)}
    words = task.grammar_wordings(PRINTABLE_ALPHABET)
    split_of = {w.text: w.split for w in words}
    assert all(split_of[t] == s for t, s in lower.items())  # the same split in both
    capital = [w for w in words if "case:capital" in w.parts]
    assert len(capital) > len(lower) / 2 and all(w.text not in lower for w in capital)
    as_written = {w.text: w for w in words if "case:capital" not in w.parts}
    for w in capital:
        i = next(k for k, ch in enumerate(w.text) if ch.isupper())
        base = w.text[:i] + w.text[i].lower() + w.text[i + 1:]
        assert split_of[w.text] == as_written[base].split, w.text
    trained = set().union(*(w.parts for w in words if w.split == "train"))
    assert "case:capital" in trained
    assert all(w.parts <= trained for w in words if w.split == "recombined")
    assert all(w.new == (w.split == "new_words") for w in words)
    for t in task.heldout_templates:  # held-out templates stay held out, in either case
        assert split_of.get(t[:1].upper() + t[1:], "recombined") != "train"
    assert set(task.templates("grammar_train", PRINTABLE_ALPHABET)) >= set(
        task.templates("grammar_train"))
    for w in words[:: max(1, len(words) // 60)]:
        task._check_template(w.text, PRINTABLE_ALPHABET)
    with pytest.raises(ValueError, match="not in the alphabet"):
        task._check_template(capital[0].text)  # not a default-alphabet template


def test_grammar_errors_name_the_problem():
    with pytest.raises(ValueError, match="slot <v> has no seen words"):
        Grammar(frames=("<v> {a}",))
    with pytest.raises(ValueError, match="both seen and new"):
        Grammar(frames=("<v> {a}",), words={"v": ("x",)}, new_words={"v": ("x",)})
    with pytest.raises(ValueError, match="at least one seen frame"):
        Grammar(frames=(Frame("{a}", new=True),))
    with pytest.raises(ValueError, match="kind must be one of"):
        Frame("{a}", kind="poem")


def test_a_grammar_run_trains_on_the_grammar_train_split_and_is_judged_on_recombined():
    from llamacpu.learn.curriculum import STAGES, competence_set, is_heldout, sample_batch
    from llamacpu.learn.train_config import TrainConfig, training_split

    stage = STAGES[4]  # sub4
    sub = TASKS["sub"]
    train = set(sub.templates("grammar_train"))
    assert set(sub.train_templates) < train
    assert train.isdisjoint(sub.templates("recombined") + sub.templates("new_words")
                            + sub.heldout_templates)
    batch = sample_batch(stage, random.Random(0), 256, split="grammar_train", review=0.0)
    assert {e.template for e in batch} <= train
    assert len({e.template for e in batch}) > 50  # far more than the six templates
    assert not any(is_heldout(e.prompt) for e in batch)
    judged = competence_set(stage, seed=1, split="grammar_train")
    kinds = Counter("recombined" if e.template in sub.templates("recombined") else
                    "train" if e.template in train else "?" for e in judged)
    assert kinds == {"train": stage.eval_size, "recombined": stage.eval_size // 2}
    assert TrainConfig(stages=(4,), wordings="grammar").split == "grammar_train"
    assert TrainConfig(stages=(4,)).split == "train"
    with pytest.raises(ValueError, match="--wordings must be one of templates, grammar"):
        TrainConfig(stages=(4,), wordings="nope")
    assert training_split({"train": {"wordings": "grammar"}}) == "grammar_train"
    assert training_split({"train": {}}) == training_split({}) == "train"  # older runs


def test_the_foreign_tasks_hold_out_whole_families_of_requests():
    """The requests of tasks the machine never learned are measured on frames (families)
    training never contains: division, counting and translation among them."""
    for name, family in (("foreign_numbers", "divide {a} by {b}"),
                         ("foreign_list", "count the digits in {digits}"),
                         ("foreign_text", "translate to french: {text}")):
        task = TASKS[name]
        assert task.declines and task.program == "decline"
        words = task.grammar_wordings()
        unseen = [w for w in words if w.new_frame]
        assert unseen and all(w.split == "new_words" for w in unseen)
        assert family in {w.text for w in unseen}
        trained = {w.text for w in words if w.split == "train"}
        assert not any(w.new_frame for w in words if w.text in trained)
        assert family not in set(task.templates("grammar_train"))
