"""Control-flow graph of a Program: build it, validate the program with it, draw it.

The graph is a ``networkx.DiGraph`` whose nodes are the addresses of INSTR slots. It is a
*static* picture: it assumes the code is not rewritten while it runs (``MOV`` can copy
instructions; a self-modifying program may get diagnostics it does not deserve).

Edges carry ``kind``, one of :data:`EDGE_KINDS`:

    next          fall-through to pc+1 (every op but JMP, HALT, RET; CALL included, as the
                  summary of "the callee returns here")
    jump          JMP t
    branch-taken  JZ/JNZ/JEQ/JNE t, when the condition holds
    call          CALL t, to the callee
    return        RET back to c+1, for each call site c whose callee can reach this RET

A DiGraph holds one edge per pair: when two kinds join the same pair (``jz x, L`` with
``L`` the next instruction), ``kind`` is the non-``next`` one and ``kinds`` lists both.

Return edges are computed per call site, not drawn to every call site: for ``CALL t`` at
``c``, the RETs reachable from ``t`` along next/jump/branch-taken edges (a nested CALL is
crossed by its fall-through, since its callee returns there) get an edge to ``c+1``. If
that walk meets an indirect jump, or the call itself is indirect (``CALL [p]``), the callee
is unknown and *every* RET gets an edge to ``c+1`` (the conservative fallback).

Indirect targets (``JMP [p]``) are unknown statically: the node gets ``dynamic=True`` and
no edge for that target. :func:`validate` then assumes such a jump may land on any
*address-taken* instruction (one named by a ``LEA p, label`` or held by a DATA slot's
pointer, e.g. ``.ptr label``) and never reports an error that depends on where it lands.

A linked program (``program.linkage``, :mod:`llamacpu.core.link`) holds a library whose
routines are entered only by CALL, and a main program may call only some of them: the
routines are roots of reachability beside the entry, so the library's unused routines are
not unreachable code (its dead code still is), while a HALT must be reachable from the
entry itself.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import networkx as nx

from llamacpu.core.isa import (
    OPS,
    RESERVED_LABELS,
    SPEC,
    Jump,
    Kind,
    LlamacpuError,
    Mode,
    Op,
    Program,
    Role,
)

__all__ = [
    "EDGE_KINDS", "EdgeStyle", "EDGE_STYLES", "Diagnostic", "ProgramError", "build_cfg",
    "instr_text", "address_taken", "reachable", "validate", "check", "to_dot", "draw",
    "DRAW_FORMATS",
]

EDGE_KINDS = ("next", "jump", "branch-taken", "call", "return")
_CONDITIONAL = frozenset(s.op for s in OPS if s.jump not in (Jump.NEVER, Jump.ALWAYS))
"""JZ JNZ JEQ JNE: jumps that may fall through."""
_NO_FALL_THROUGH = frozenset(s.op for s in OPS if s.jump == Jump.ALWAYS and s.op != Op.CALL
                             or s.op == Op.HALT)
"""JMP RET HALT: never go on to pc + 1 (CALL comes back to it)."""
_INTRA = frozenset({"next", "jump", "branch-taken"})  # edges that stay inside a procedure


# --------------------------------------------------------------------------- disassembly

def _label_for(program: Program, addr: int) -> str:
    """``label``, ``label+k`` (nearest label below, inside the program) or the number.

    The ports IN and OUT name only themselves: ``OUT+3`` would suggest an output slot.
    """
    if not 0 <= addr < len(program):
        return str(addr)
    best: tuple[int, str] | None = None
    for name, a in program.symbols.items():
        if name in RESERVED_LABELS and a != addr:
            continue
        if a <= addr and (best is None or a > best[0] or (a == best[0] and name < best[1])):
            best = (a, name)
    if best is None:
        return str(addr)
    a, name = best
    return name if a == addr else f"{name}+{addr - a}"


def _imm_text(program: Program, v: int) -> str:
    alpha = program.alphabet
    if v == alpha.end:
        return "#END"
    if alpha.is_digit(v):
        return f"#{v}"
    if 0 <= v < alpha.size:
        ch = alpha.decode_symbol(v)
        return "#" + repr(ch) if ch in "'\\" else f"#'{ch}'"
    return f"#?{v}"


def instr_text(program: Program, addr: int) -> str:
    """A one-line disassembly of the instruction at ``addr``, e.g. ``add x, [p], #1``."""
    slot = program.slots[addr]
    if slot.kind != Kind.INSTR:
        return f".{slot.kind.name.lower()}"
    spec = SPEC[slot.op]
    ops = []
    for i in range(spec.arity):
        mode, a = slot.modes[i], slot.args[i]
        if mode == Mode.IMMEDIATE:
            ops.append(_imm_text(program, slot.val))
        elif mode == Mode.INDIRECT:
            ops.append(f"[{_label_for(program, a)}]")
        else:
            ops.append(_label_for(program, a))
    name = spec.mnemonic.lower()
    return f"{name} {', '.join(ops)}" if ops else name


# --------------------------------------------------------------------------- the graph

def _target(program: Program, addr: int) -> tuple[Mode, int] | None:
    """The (mode, address) of the TARGET operand of the instruction at ``addr``, if any."""
    slot = program.slots[addr]
    spec = SPEC[slot.op]
    if Role.TARGET not in spec.roles:
        return None
    i = spec.roles.index(Role.TARGET)
    return slot.modes[i], slot.args[i]


def _is_instr(program: Program, addr: int) -> bool:
    return 0 <= addr < len(program) and program.slots[addr].kind == Kind.INSTR


def _add_edge(g: nx.DiGraph, u: int, v: int, kind: str) -> None:
    """Add an edge; when two kinds join the same pair, keep the first and list both."""
    if g.has_edge(u, v):
        data = g.edges[u, v]
        if kind not in data["kinds"]:
            data["kinds"] = data["kinds"] + (kind,)
        return
    g.add_edge(u, v, kind=kind, kinds=(kind,))


def _rets_of_callee(g: nx.DiGraph, t: int) -> tuple[set[int], bool]:
    """RETs reachable from ``t`` inside the procedure, and whether the walk met a dynamic jump."""
    seen, todo, rets, dynamic = {t}, deque([t]), set(), False
    while todo:
        u = todo.popleft()
        node = g.nodes[u]
        if node["op"] == Op.RET:
            rets.add(u)
            continue
        if node["dynamic"] and node["op"] != Op.CALL:
            dynamic = True
        for v in g.successors(u):
            # a nested CALL is crossed by its fall-through, not by its edge to the callee
            if v not in seen and _INTRA.intersection(g.edges[u, v]["kinds"]):
                seen.add(v)
                todo.append(v)
    return rets, dynamic


def _callees(program: Program, g: nx.DiGraph) -> dict[int, tuple[set[int], bool]]:
    """:func:`_rets_of_callee` for every direct CALL target that is an instruction."""
    targets = set()
    for c in g.nodes:
        if g.nodes[c]["op"] == Op.CALL:
            mode, t = _target(program, c)  # type: ignore[misc]
            if mode == Mode.DIRECT and t in g:
                targets.add(t)
    return {t: _rets_of_callee(g, t) for t in targets}


def build_cfg(program: Program) -> nx.DiGraph:
    """The control-flow graph: one node per INSTR slot, edges as in the module docstring.

    Node attributes: ``op`` (Op), ``text`` (disassembly with labels), ``line`` (source
    line or None), ``labels`` (tuple of label names), ``dynamic`` (has an indirect target).
    Graph attributes: ``entry`` and ``name``. Targets that are not instructions get no
    edge (:func:`validate` reports them).
    """
    g = nx.DiGraph(entry=program.entry, name=program.name)
    for addr, slot in enumerate(program.slots):
        if slot.kind != Kind.INSTR:
            continue
        loc = program.source_map.get(addr)
        tgt = _target(program, addr)
        g.add_node(addr, op=slot.op, text=instr_text(program, addr),
                   line=None if loc is None else loc.line,
                   labels=tuple(program.labels_at(addr)),
                   dynamic=tgt is not None and tgt[0] == Mode.INDIRECT)
    for addr in list(g.nodes):
        op = g.nodes[addr]["op"]
        tgt = _target(program, addr)
        if tgt is not None and tgt[0] == Mode.DIRECT and _is_instr(program, tgt[1]):
            kind = "call" if op == Op.CALL else "jump" if op == Op.JMP else "branch-taken"
            _add_edge(g, addr, tgt[1], kind)
        if op not in _NO_FALL_THROUGH and _is_instr(program, addr + 1):
            _add_edge(g, addr, addr + 1, "next")
    # Return edges, per call site (see the module docstring).
    all_rets = {a for a in g.nodes if g.nodes[a]["op"] == Op.RET}
    callees = _callees(program, g)  # computed before any return edge exists
    for c in [a for a in g.nodes if g.nodes[a]["op"] == Op.CALL]:
        if not _is_instr(program, c + 1):
            continue  # validate reports the fall-through; no node to return to
        mode, t = _target(program, c)  # type: ignore[misc]
        if mode == Mode.DIRECT:
            if t not in callees:
                continue  # not an instruction: validate reports it
            rets, dynamic = callees[t]
            if dynamic:
                rets = all_rets
        else:
            rets = all_rets
        for r in sorted(rets):
            _add_edge(g, r, c + 1, "return")
    return g


def address_taken(program: Program) -> frozenset[int]:
    """Instructions whose address the program holds as data: where indirect jumps may land.

    These are the operands of ``LEA p, label`` and the pointers of DATA slots (``.ptr``)
    that name an INSTR slot. A heuristic: pointer arithmetic can reach others.
    """
    out = set()
    for slot in program.slots:
        if slot.kind == Kind.DATA:
            cands = [slot.ptr]
        elif slot.kind == Kind.INSTR and slot.op == Op.LEA and slot.modes[1] == Mode.DIRECT:
            cands = [slot.args[1]]
        else:
            continue
        out.update(a for a in cands if _is_instr(program, a))
    return frozenset(out)


def reachable(program: Program, g: nx.DiGraph | None = None, *,
              routines: bool = True) -> tuple[frozenset[int], bool]:
    """Instructions reachable from the entry, and whether a reachable jump is indirect.

    Once an indirect jump is reachable, every :func:`address_taken` instruction is treated
    as reachable too. With ``routines``, a linked program's library routines are reached
    as well, as if called (see the module docstring).
    """
    if g is None:
        g = build_cfg(program)
    if program.entry not in g:
        return frozenset(), False
    seen = {program.entry}
    if routines and program.linkage is not None:
        seen.update(a for a in program.linkage.routines.values() if a in g)
    todo = deque(seen)
    dynamic = False
    while todo:
        u = todo.popleft()
        if g.nodes[u]["dynamic"] and not dynamic:
            dynamic = True
            for a in address_taken(program) - seen:
                seen.add(a)
                todo.append(a)
        for v in g.successors(u):
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return frozenset(seen), dynamic


# --------------------------------------------------------------------------- validation

@dataclass(frozen=True)
class Diagnostic:
    """One finding of :func:`validate`, printable like a compiler message."""

    severity: Literal["error", "warning"]
    addr: int      # the slot the finding is about
    message: str
    location: str  # ``file:line:col`` of that slot, or ``<name>: slot N`` without a source map

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message}"


class ProgramError(LlamacpuError):
    """A program that :func:`validate` finds errors in; ``diagnostics`` has all findings."""

    def __init__(self, diagnostics: list[Diagnostic] | tuple[Diagnostic, ...]) -> None:
        self.diagnostics = tuple(diagnostics)
        errors = [d for d in self.diagnostics if d.severity == "error"]
        head = f"{len(errors)} error{'s' if len(errors) != 1 else ''} in the program"
        super().__init__("\n".join([head + ":"] + [str(d) for d in errors]))


def _location(program: Program, addr: int) -> str:
    loc = program.source_map.get(addr)
    return str(loc) if loc is not None else program.where(addr)


def _describe_slot(program: Program, addr: int) -> str:
    """``'x' (slot 12, DATA)``, ``slot 12 (DATA)`` or ``slot 57 (outside the program, 0..39)``."""
    if not 0 <= addr < len(program):
        return f"slot {addr} (outside the program, 0..{len(program) - 1})"
    names = program.labels_at(addr)
    kind = program.slots[addr].kind.name
    return f"'{names[0]}' (slot {addr}, {kind})" if names else f"slot {addr} ({kind})"


def validate(program: Program) -> list[Diagnostic]:
    """Check a program statically; errors first in address order, then warnings.

    Errors: a direct jump/call target outside the program or not an instruction; an
    instruction that can fall through into a non-instruction slot or off the end (a CALL
    only if its callee can return); the entry not an instruction; no HALT reachable from
    the entry (a warning instead when an indirect jump is reachable, since it may lead to
    one). Warnings: unreachable instructions (see :func:`reachable`), one per run of
    consecutive ones. With a bad entry the reachability checks are skipped.
    """
    g = build_cfg(program)
    found: list[tuple[int, str, str]] = []  # (addr, severity, message)

    def err(addr: int, msg: str) -> None:
        found.append((addr, "error", msg))

    if not _is_instr(program, program.entry):
        err(program.entry, f"the entry {_describe_slot(program, program.entry)} "
                           "is not an instruction")
    callees = _callees(program, g)
    for addr in sorted(g.nodes):
        node = g.nodes[addr]
        op, text = node["op"], node["text"]
        tgt = _target(program, addr)
        if tgt is not None and tgt[0] == Mode.DIRECT and not _is_instr(program, tgt[1]):
            what = "call" if op == Op.CALL else "jump"
            err(addr, f"{what} target {_describe_slot(program, tgt[1])} is not an "
                      f"instruction in '{text}'")
        falls = op not in _NO_FALL_THROUGH and (op != Op.CALL
                                                or _callee_may_return(program, callees, addr))
        if falls and not _is_instr(program, addr + 1):
            if addr + 1 >= len(program):
                err(addr, f"'{text}' falls off the end of the program")
            else:
                err(addr, f"'{text}' falls through into {_describe_slot(program, addr + 1)}")
    if _is_instr(program, program.entry):
        seen, dynamic = reachable(program, g)
        from_entry = seen
        if program.linkage is not None:  # a HALT only the library reaches does not count
            from_entry, dynamic = reachable(program, g, routines=False)
        if not any(g.nodes[a]["op"] == Op.HALT for a in from_entry):
            sev = "warning" if dynamic else "error"
            found.append((program.entry, sev, "no HALT is reachable from the entry"
                          + (" except perhaps through an indirect jump" if dynamic else "")))
        dead = sorted(set(g.nodes) - seen)
        for run in _runs(dead):
            msg = f"unreachable instruction '{g.nodes[run[0]]['text']}'"
            if len(run) > 1:
                msg += f" and {len(run) - 1} more after it (slots {run[0]}..{run[-1]})"
            found.append((run[0], "warning", msg))
    found.sort(key=lambda f: (f[1] != "error", f[0]))
    return [Diagnostic(sev, a, msg, _location(program, a)) for a, sev, msg in found]  # type: ignore[arg-type]


def _callee_may_return(program: Program, callees: dict[int, tuple[set[int], bool]],
                       c: int) -> bool:
    """Whether the callee of CALL ``c`` can reach a RET (an indirect callee: assume so)."""
    mode, t = _target(program, c)  # type: ignore[misc]
    if mode != Mode.DIRECT:
        return True
    if t not in callees:
        return False  # not an instruction: the bad target is the error worth reporting
    rets, dynamic = callees[t]
    return bool(rets) or dynamic


def _runs(addrs: list[int]) -> list[list[int]]:
    """Split sorted addresses into runs of consecutive ones."""
    runs: list[list[int]] = []
    for a in addrs:
        if runs and runs[-1][-1] == a - 1:
            runs[-1].append(a)
        else:
            runs.append([a])
    return runs


def check(program: Program) -> list[Diagnostic]:
    """:func:`validate`, raising :class:`ProgramError` if any finding is an error.

    Returns the warnings otherwise.
    """
    diags = validate(program)
    if any(d.severity == "error" for d in diags):
        raise ProgramError(diags)
    return diags


# --------------------------------------------------------------------------- drawing

@dataclass(frozen=True)
class EdgeStyle:
    """How an edge kind is drawn, in both DOT and matplotlib."""

    color: str
    dot_style: str  # solid | dashed | dotted | bold
    mpl_style: str  # matplotlib linestyle


EDGE_STYLES = {
    "next": EdgeStyle("black", "solid", "-"),
    "jump": EdgeStyle("#1f77b4", "solid", "-"),
    "branch-taken": EdgeStyle("#2ca02c", "dashed", "--"),
    "call": EdgeStyle("#9467bd", "bold", "-"),
    "return": EdgeStyle("#7f7f7f", "dotted", ":"),
}


def _node_label(g: nx.DiGraph, addr: int) -> str:
    labels = g.nodes[addr]["labels"]
    head = f"{addr}  {', '.join(labels)}:" if labels else str(addr)
    return f"{head}\n{g.nodes[addr]['text']}"


def _fill(g: nx.DiGraph, addr: int, live: frozenset[int]) -> str:
    node = g.nodes[addr]
    if addr == g.graph["entry"]:
        return "#c7e9c0"  # green: where execution starts
    if node["op"] == Op.HALT:
        return "#fcbba1"  # red: where it stops
    if addr not in live:
        return "#d9d9d9"  # grey: unreachable
    if node["dynamic"]:
        return "#fdd0a2"  # orange: an indirect target
    return "white"


def _dot_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(program: Program) -> str:
    """Graphviz DOT text of the CFG (render with ``dot -Tsvg``; no graphviz needed here)."""
    g = build_cfg(program)
    live, _ = reachable(program, g)
    lines = [f"digraph {_dot_quote(program.name)} {{",
             '  node [shape=box, style=filled, fontname="monospace"];']
    for addr in sorted(g.nodes):
        extra = ", peripheries=2" if g.nodes[addr]["dynamic"] else ""
        lines.append(f"  n{addr} [label={_dot_quote(_node_label(g, addr))}, "
                     f"fillcolor={_dot_quote(_fill(g, addr, live))}{extra}];")
    for u, v, kind in sorted(g.edges(data="kind")):
        st = EDGE_STYLES[kind]
        label = "" if kind == "next" else f"label={_dot_quote(kind)}, "
        lines.append(f"  n{u} -> n{v} [{label}color={_dot_quote(st.color)}, "
                     f"style={st.dot_style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


DRAW_FORMATS = (".png", ".svg", ".pdf", ".dot")


def _layout(program: Program, g: nx.DiGraph) -> dict[int, tuple[int, int]]:
    """(column, row) per node: a column per procedure (the entry's code, then each callee,
    each claiming what it reaches without calls), rows in address order."""
    procs = [program.entry] if program.entry in g else []
    procs += sorted({v for _, v, k in g.edges(data="kind") if k == "call"} - set(procs))
    column: dict[int, int] = {}
    for col, start in enumerate(procs):
        todo = deque([start])
        while todo:
            u = todo.popleft()
            if u in column:
                continue
            column[u] = col
            todo.extend(v for v in g.successors(u)
                        if _INTRA.intersection(g.edges[u, v]["kinds"]))
    pos = {}
    col = 0
    for row, addr in enumerate(sorted(g.nodes)):
        col = column.get(addr, col)  # code no procedure reaches: its upper neighbour's column
        pos[addr] = (col, row)
    return pos


def draw(program: Program, path: str | Path) -> Path:
    """Draw the CFG to ``path``: ``.dot`` writes :func:`to_dot`; ``.png``/``.svg``/``.pdf``
    render with matplotlib (Agg), one column per procedure, top to bottom by address."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in DRAW_FORMATS:
        raise ValueError(f"cannot draw to {str(path)!r}: the extension must be one of "
                         f"{', '.join(DRAW_FORMATS)}")
    if ext == ".dot":
        path.write_text(to_dot(program))
        return path
    _draw_matplotlib(program, path)
    return path


_COL_W, _ROW_H = 3.2, 0.6  # inches per column and per row of the drawing
_FONT_PT = 7
_CHAR_W = 0.6 * _FONT_PT / 72  # inches per monospace character


def _draw_matplotlib(program: Program, path: Path) -> None:
    # The Agg canvas directly, not pyplot: no global backend switch, no figure registry.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    g = build_cfg(program)
    live, _ = reachable(program, g)
    grid = _layout(program, g)
    n_cols = 1 + max((c for c, _ in grid.values()), default=0)
    n_rows = max(1, len(grid))
    margin, legend_w = 0.9, 1.3
    width = _COL_W * (n_cols - 1) + 2 * margin + legend_w
    height = _ROW_H * (n_rows - 1) + 2 * margin
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-margin, width - margin)  # data units are inches, so arcs are not squashed
    ax.set_ylim(-(height - margin), margin)
    ax.axis("off")
    pos = {a: (c * _COL_W, -r * _ROW_H) for a, (c, r) in grid.items()}  # inches
    boxes = {}
    for addr, (x, y) in pos.items():
        boxes[addr] = ax.text(
            x, y, _node_label(g, addr), ha="center", va="center", family="monospace",
            fontsize=_FONT_PT, zorder=2,  # under the arrows, drawn first
            bbox=dict(boxstyle="round,pad=0.25", fc=_fill(g, addr, live), ec="black",
                      lw=1.6 if g.nodes[addr]["dynamic"] else 0.8))
    for u, v, kind in g.edges(data="kind"):
        st = EDGE_STYLES[kind]
        style = dict(arrowstyle="-|>", color=st.color, ls=st.mpl_style,
                     lw=1.6 if kind == "call" else 0.9)
        (x0, y0), (x1, y1) = pos[u], pos[v]
        if u == v:  # a self-loop: a small arc on the box's right edge
            half = max(map(len, _node_label(g, u).split("\n"))) * _CHAR_W / 2 + 0.1
            ax.annotate("", xy=(x0 + half, y0 - 0.08), xytext=(x0 + half, y0 + 0.08),
                        arrowprops=dict(style, connectionstyle="arc3,rad=-1.5"), zorder=3)
            continue
        dist = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5
        if abs(x1 - x0) > 0.5 * _COL_W:  # between columns (calls, returns): a gentle curve
            rad = 0.2
        elif dist <= 1.01 * _ROW_H:      # to the next row: straight
            rad = 0.0
        else:  # within a column: bend out past the boxes in between; arc3's curve peaks
            # at rad·dist/2 from the chord, so this clears the column's axis by ``clear``
            clear = min(0.8 + 0.02 * dist, 0.45 * _COL_W)
            rad = 2 * clear / dist
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=3,  # clipped to the boxes
                    arrowprops=dict(style, connectionstyle=f"arc3,rad={rad:.3f}",
                                    patchA=boxes[u].get_bbox_patch(),
                                    patchB=boxes[v].get_bbox_patch()))
    handles = [Line2D([], [], color=s.color, ls=s.mpl_style, label=k)
               for k, s in EDGE_STYLES.items()]
    ax.legend(handles=handles, loc="upper right", fontsize=_FONT_PT, frameon=True)
    # Agg's limit is 2**16 pixels a side: long programs get a lower resolution, same layout.
    fig.savefig(path, dpi=min(110.0, 60000 / max(width, height)))
