"""HybridSWM: address keys, slot encoding, read/write heads, sparse reads.

Every random test is seeded (torch.manual_seed / hypothesis derandomize) so failures replay.
"""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from llamacpu.core.isa import (
    DEFAULT_ALPHABET,
    EMPTY_SLOT,
    NUM_FIELDS,
    Alphabet,
    Kind,
    Mode,
    Op,
    Program,
    Slot,
    memory_image,
)
from llamacpu.machine.addressing import (
    DEFAULT_SHARPNESS,
    AddressCodec,
    address_weights,
    straight_through,
    topk_addresses,
)
from llamacpu.machine.memory import (
    FIELD_NAMES,
    HybridSWM,
    SlotLayout,
    read,
    read_topk,
    write,
    write_sparse,
)

N16 = 1 << 16
CODEC16 = AddressCodec(16)
F64 = torch.float64


@pytest.fixture(scope="module")
def keys16() -> torch.Tensor:
    return CODEC16.keys(N16)


def edge_and_random_addresses(n: int, count: int, seed: int) -> torch.Tensor:
    """Edges (0, 1, n−1, powers of two and their neighbours) plus seeded random addresses."""
    g = torch.Generator().manual_seed(seed)
    edges = {0, 1, n - 1, n - 2}
    for b in range(n.bit_length()):
        edges |= {min(max((1 << b) + d, 0), n - 1) for d in (-1, 0, 1)}
    rand = torch.randint(0, n, (count,), generator=g).tolist()
    return torch.tensor(sorted(edges | set(rand)))


# ============================================================== address keys

@pytest.mark.parametrize("n", [1, 2, 3, 1000, 65536, 65537, 1 << 20])
def test_key_width_grows_like_log_n(n):
    c = AddressCodec.for_size(n)
    assert c.capacity >= n and (n == 1 or c.capacity // 2 < n)
    assert c.width == 2 * max(1, math.ceil(math.log2(n)))
    assert c.keys(min(n, 4)).shape == (min(n, 4), c.width)


def test_codec_rejects_sizes_and_addresses_it_cannot_hold():
    with pytest.raises(ValueError, match="do not fit"):
        AddressCodec(4).keys(17)
    with pytest.raises(ValueError, match="0..15"):
        AddressCodec(4).address_to_key(torch.tensor([16]))
    with pytest.raises(ValueError, match="width"):
        AddressCodec(4).key_to_address(torch.zeros(3, 6))
    with pytest.raises(ValueError):
        AddressCodec(0)


def test_keys_are_unit_circle_points_exact_at_quarter_turns():
    c = AddressCodec(3)
    k = c.address_to_key(torch.tensor([0, 1, 2, 4]), dtype=F64).view(4, 3, 2)
    assert torch.equal(k[0], torch.tensor([[1.0, 0], [1, 0], [1, 0]], dtype=F64))
    # key(1): blocks at 2π/2, 2π/4, 2π/8
    assert torch.equal(k[1, 0], torch.tensor([-1.0, 0], dtype=F64))
    assert torch.equal(k[1, 1], torch.tensor([0.0, 1], dtype=F64))
    assert torch.allclose(k[1, 2], torch.tensor([math.sqrt(0.5)] * 2, dtype=F64))
    assert torch.equal(k[3], torch.tensor([[1.0, 0], [1, 0], [-1, 0]], dtype=F64))  # key(4)
    assert torch.allclose(k.norm(dim=-1), torch.ones(4, 3, dtype=F64))


def test_every_address_of_65536_encodes_and_decodes_exactly(keys16):
    addr = torch.arange(N16)
    assert torch.equal(CODEC16.address_to_key(addr), keys16)
    assert torch.equal(CODEC16.key_to_address(keys16), addr)
    # keys of an offset range are the same keys
    assert torch.equal(CODEC16.keys(100, start=40000), keys16[40000:40100])


def test_every_address_of_65536_reads_back_exactly_in_hard_mode(keys16):
    # slot i holds (i, −i); all 65,536 pointers read at once through the sparse path
    memory = torch.stack([torch.arange(float(N16)), -torch.arange(float(N16))], -1)[None]
    r = read_topk(memory, keys16[None], CODEC16, k=1, hard=True, beam=1)
    assert torch.equal(r.indices[0, :, 0], torch.arange(N16))
    assert torch.equal(r.values[0], memory[0])
    # the dense read (O(N) per pointer) on edges and a seeded sample agrees exactly
    addr = edge_and_random_addresses(N16, 1500, seed=1)
    d = read(memory, keys16[addr][None], keys16, hard=True)
    assert torch.equal(d.values[0], memory[0, addr])
    assert torch.equal(d.weights[0].argmax(-1), addr)
    assert torch.equal(d.weights[0].sum(-1), torch.ones(len(addr)))  # exactly one-hot


def test_margin_is_two_at_the_antipode_and_three_elsewhere(keys16):
    addr = edge_and_random_addresses(N16, 300, seed=2)
    scores = keys16[addr] @ keys16.T                                   # [Q, N]
    top2 = scores.topk(3, dim=-1)
    assert torch.allclose(top2.values[:, 0], torch.full((len(addr),), 16.0))
    assert torch.equal(top2.indices[:, 0], addr)
    assert torch.allclose(top2.values[:, 1], torch.full((len(addr),), 14.0), atol=1e-4)
    assert torch.equal(top2.indices[:, 1], (addr + N16 // 2) % N16)   # the antipode
    assert (top2.values[:, 2] <= 13.0 + 1e-4).all()


def test_soft_weight_at_default_sharpness_is_at_least_099_for_every_address(keys16):
    # exact float64 sum over all 2^16 offsets: the weight is the same for every address
    floor = CODEC16.soft_weight_floor(DEFAULT_SHARPNESS)
    assert floor >= 0.99
    assert floor == pytest.approx(0.99962, abs=1e-5)
    # ... because scores depend only on i − j: the float32 score rows are rotations of row 0
    row0 = keys16 @ keys16[0]
    g = torch.Generator().manual_seed(3)
    for i in torch.randint(0, N16, (6,), generator=g).tolist() + [1, N16 - 1]:
        assert torch.allclose(keys16 @ keys16[i], row0.roll(i), atol=2e-5)
    # and the actual soft read gives every sampled address that weight
    addr = edge_and_random_addresses(N16, 800, seed=4)
    memory = torch.zeros(1, N16, 1)
    w = read(memory, keys16[addr][None], keys16).weights[0]          # [Q, N]
    own = w[torch.arange(len(addr)), addr]
    assert (own >= 0.99).all()
    assert torch.allclose(own, torch.full_like(own, floor), atol=1e-5)


def test_larger_memories_keep_the_soft_weight():
    assert AddressCodec(20).soft_weight_floor() >= 0.9995
    assert AddressCodec(8).soft_weight_floor(2.0) < 0.99  # sharpness matters: 2 is too soft


# ============================================================== pointer arithmetic

def test_inc_dec_on_keys_equal_the_neighbouring_keys(keys16):
    assert torch.allclose(CODEC16.inc(keys16), keys16.roll(-1, 0), atol=1e-6)
    assert torch.allclose(CODEC16.dec(keys16), keys16.roll(1, 0), atol=1e-6)
    g = torch.Generator().manual_seed(5)
    addr = torch.randint(0, N16, (512,), generator=g)
    for n in (7, -3, 1000, -40000, N16 + 5):
        want = CODEC16.address_to_key((addr + n) % N16)
        assert torch.allclose(CODEC16.shift(keys16[addr], n), want, atol=1e-5)
    # a shift per pointer
    n = torch.randint(-50, 50, (512,), generator=g)
    assert torch.allclose(CODEC16.shift(keys16[addr], n),
                          CODEC16.address_to_key((addr + n) % N16), atol=1e-5)


def test_shift_is_a_fixed_block_rotation():
    c = AddressCodec(6)
    keys = c.keys(64, dtype=F64)
    for n in (1, -1, 5, 63):
        R = c.rotation(n, dtype=F64)
        assert torch.allclose(keys @ R.T, c.shift(keys, n))
        assert torch.allclose(R @ R.T, torch.eye(c.width, dtype=F64))
    assert torch.allclose(c.rotation(1, dtype=F64) @ c.rotation(-1, dtype=F64),
                          torch.eye(c.width, dtype=F64))
    # linear: shift of a blend is the blend of shifts
    a, b = keys[3], keys[40]
    assert torch.allclose(c.shift(0.3 * a + 0.7 * b, 2), 0.3 * c.shift(a, 2) + 0.7 * c.shift(b, 2))


def test_many_incs_in_hard_mode_stay_exact():
    g = torch.Generator().manual_seed(6)
    addr = torch.randint(0, N16 - 2000, (64,), generator=g)
    p = CODEC16.address_to_key(addr)
    drift = p.clone()
    for _ in range(2000):
        p = CODEC16.inc(p, hard=True)
        drift = CODEC16.inc(drift)
    assert torch.equal(p, CODEC16.address_to_key(addr + 2000))
    # without snapping, float32 rotation drifts a little but still decodes right
    assert torch.equal(CODEC16.key_to_address(drift), addr + 2000)
    assert (drift - p).abs().max() < 1e-3
    for _ in range(2000):
        p = CODEC16.dec(p, hard=True)
    assert torch.equal(p, CODEC16.address_to_key(addr))


def test_addresses_wrap_modulo_capacity():
    c = AddressCodec(5)
    last = c.address_to_key(torch.tensor([31]))
    assert torch.equal(c.inc(last, hard=True), c.address_to_key(torch.tensor([0])))
    assert int(c.key_to_address(c.dec(c.address_to_key(torch.tensor(0))))) == 31


def test_snap_is_exact_forward_and_identity_backward():
    c = AddressCodec(4)
    x = (c.address_to_key(torch.tensor([9]), dtype=F64)
         + 0.2 * torch.randn(1, 8, dtype=F64, generator=torch.Generator().manual_seed(7)))
    x.requires_grad_()
    y = c.snap(x)
    assert torch.equal(y.detach(), c.address_to_key(torch.tensor([9]), dtype=F64))
    (y * torch.arange(8.0, dtype=F64)).sum().backward()
    assert torch.equal(x.grad, torch.arange(8.0, dtype=F64)[None])


# ============================================================== slot encoding

def slots(alphabet: Alphabet, capacity: int) -> st.SearchStrategy[Slot]:
    return st.builds(
        Slot,
        st.sampled_from(Kind), st.sampled_from(Op),
        st.tuples(*[st.sampled_from(Mode)] * NUM_FIELDS),
        st.tuples(*[st.integers(0, capacity - 1)] * NUM_FIELDS),
        st.integers(0, alphabet.size - 1),
    )


LAYOUTS = {
    "default": SlotLayout(),
    "bytes": SlotLayout(Alphabet.byte_alphabet(), AddressCodec(10)),
}


def test_slot_width_and_field_order():
    for layout in LAYOUTS.values():
        A, V = layout.codec.width, layout.alphabet.size
        assert layout.width == len(Kind) + len(Op) + NUM_FIELDS * len(Mode) + NUM_FIELDS * A + V
        assert tuple(f.name for f in layout.fields) == FIELD_NAMES
        assert [f.start for f in layout.fields[1:]] == [f.stop for f in layout.fields[:-1]]
    assert SlotLayout().width == 4 + 27 + 16 + 4 * 32 + 55


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_encode_decode_round_trip(name, data):
    layout = LAYOUTS[name]
    batch = data.draw(st.lists(slots(layout.alphabet, layout.codec.capacity), min_size=1,
                               max_size=12))
    x = layout.encode(batch)
    assert x.shape == (len(batch), layout.width)
    assert layout.decode(x) == tuple(batch)
    for one_hot in ("kind", "op", "mode0", "mode3", "val"):
        assert torch.equal(layout.get(x, one_hot).sum(-1), torch.ones(len(batch)))
    assert torch.equal(layout.get(x, "p2"), layout.codec.address_to_key(
        torch.tensor([s.args[2] for s in batch])))
    # float64 tensors decode the same
    assert layout.decode(layout.encode(batch, dtype=F64)) == tuple(batch)


def test_encode_image_pads_with_empty_slots():
    layout = SlotLayout()
    prog = Program(slots=(Slot.data(), Slot.data(), Slot.instr(Op.HALT)), entry=2)
    short, long = memory_image(prog, "1", out_size=2), memory_image(prog, "12+3", out_size=3)
    x = layout.encode_image([short, long])
    assert x.shape == (2, long.size, layout.width)
    rows = layout.decode_image(x)
    assert rows[1] == long.slots
    assert rows[0] == short.slots + (EMPTY_SLOT,) * (long.size - short.size)
    assert layout.encode_image([short.slots], size=10).shape == (1, 10, layout.width)
    with pytest.raises(ValueError, match="more than size"):
        layout.encode_image([long], size=3)


def test_encode_rejects_values_and_addresses_outside_the_layout():
    layout = SlotLayout(codec=AddressCodec(4))
    with pytest.raises(ValueError, match="slot 1: value 55"):
        layout.encode([Slot.data(1), Slot.data(55)])
    with pytest.raises(ValueError, match="slot 0: address field"):
        layout.encode([Slot.data(1, ptr=16)])


def test_field_views_masks_and_place():
    layout = SlotLayout(codec=AddressCodec(4))
    x = layout.encode([Slot.instr(Op.ADD, ((Mode.DIRECT, 3), (Mode.INDIRECT, 9),
                                           (Mode.IMMEDIATE, 0)), imm=7)])
    p1 = layout.get(x, "p1")
    assert p1.data_ptr() == x[:, layout.field("p1").start].data_ptr()  # a view
    assert torch.equal(layout.args(x)[:, 1], p1)
    assert torch.equal(layout.modes(x)[0].argmax(-1), torch.tensor([1, 2, 3, 0]))
    m = layout.mask("val", "p0")
    assert int(m.sum()) == layout.alphabet.size + layout.codec.width
    assert torch.equal(layout.place("p1", p1) + layout.place("val", layout.get(x, "val")),
                       x * layout.mask("p1", "val"))
    with pytest.raises(KeyError, match="no slot field"):
        layout.field("value")
    e = layout.promote_empty(layout.encode([EMPTY_SLOT, Slot.instr(Op.NOP)]))
    assert [s.kind for s in layout.decode(e)] == [Kind.DATA, Kind.INSTR]


# ============================================================== read and write heads

def random_memory(layout: SlotLayout, b: int, n: int, seed: int) -> tuple[torch.Tensor, list]:
    rows = [_seeded_slots(layout, n, seed + i) for i in range(b)]
    return layout.encode_image(rows), rows


def _seeded_slots(layout: SlotLayout, n: int, seed: int) -> list[Slot]:
    g = torch.Generator().manual_seed(seed)

    def ri(hi: int, size: int = 1) -> list[int]:
        return torch.randint(0, hi, (size,), generator=g).tolist()

    return [Slot(Kind(ri(len(Kind))[0]), Op(ri(len(Op))[0]),
                 tuple(Mode(m) for m in ri(len(Mode), NUM_FIELDS)),  # type: ignore[arg-type]
                 tuple(ri(n, NUM_FIELDS)), ri(layout.alphabet.size)[0])  # type: ignore[arg-type]
            for _ in range(n)]


@pytest.mark.parametrize("fields", [("val",), ("p0",), ("kind", "val"), tuple(FIELD_NAMES)])
def test_write_with_a_field_mask_changes_only_that_field(fields):
    swm = HybridSWM(SlotLayout(codec=AddressCodec(5)))
    layout = swm.layout
    memory, rows = random_memory(layout, 2, 20, seed=10)
    new = _seeded_slots(layout, 2, seed=99)
    at = torch.tensor([3, 17])
    w = swm.read(memory, swm.codec.address_to_key(at)[:, None], hard=True).weights[:, 0]
    erase = layout.mask(*fields)
    out = swm.write(memory, w, layout.encode(new), erase)
    changed = (out != memory)                                            # [B, N, D]
    for b in range(2):
        assert not changed[b, torch.arange(20) != at[b]].any()          # other slots: exact bits
        assert not changed[b, at[b], erase == 0].any()                  # other fields: exact bits
        got, old, want = layout.decode(out[b])[at[b]], rows[b][at[b]], new[b]
        for name, value in (("kind", got.kind), ("op", got.op), ("val", got.val)):
            assert value == getattr(want if name in fields else old, name)
        for i in range(NUM_FIELDS):
            src = want if f"p{i}" in fields else old
            assert got.args[i] == src.args[i]
            src = want if f"mode{i}" in fields else old
            assert got.modes[i] == src.modes[i]


def test_write_gate_and_soft_equation():
    torch.manual_seed(11)
    B, N, D = 3, 7, 5
    memory, value, erase = torch.randn(B, N, D), torch.randn(B, D), torch.rand(B, D)
    weights = torch.softmax(torch.randn(B, N), -1)
    gate = torch.tensor([0.0, 1.0, 0.4])
    out = write(memory, weights, value, erase, gate)
    assert torch.equal(out[0], memory[0])                                # gate 0: untouched
    for b in range(B):
        for i in range(N):
            gw = gate[b] * weights[b, i]
            want = memory[b, i] * (1 - gw * erase[b]) + gw * erase[b] * value[b]
            assert torch.allclose(out[b, i], want, atol=1e-6)
    # the sparse write equals the dense write at the same rows
    idx = torch.tensor([[0, 4], [6, 1], [2, 3]])
    w_sparse = torch.rand(B, 2)
    dense_w = torch.zeros(B, N).scatter(1, idx, w_sparse)
    assert torch.allclose(write_sparse(memory, idx, w_sparse, value, erase, gate),
                          write(memory, dense_w, value, erase, gate), atol=1e-6)
    with pytest.raises(ValueError, match="distinct"):
        write_sparse(memory, torch.tensor([[1, 1]] * B), w_sparse, value, erase)


def test_sparse_read_and_write_match_dense_ones_in_hard_mode():
    swm = HybridSWM(SlotLayout(codec=AddressCodec(7)))
    memory, _ = random_memory(swm.layout, 2, 100, seed=20)
    p = swm.codec.address_to_key(torch.tensor([[42], [99]]))
    dense = swm.read(memory, p, hard=True)
    sparse = swm.read_topk(memory, p, k=4, hard=True)
    assert torch.equal(sparse.values, dense.values)
    value, erase = torch.randn(2, swm.width), swm.layout.mask("val", "p1")
    want = swm.write(memory, dense.weights[:, 0], value, erase)
    got = swm.write_sparse(memory, sparse.indices[:, 0], sparse.weights[:, 0], value, erase)
    assert torch.equal(got, want)


def test_soft_read_is_softmax_attention_through_the_kernel(monkeypatch):
    torch.manual_seed(12)
    c = AddressCodec(5)
    keys = c.keys(30, dtype=F64)
    memory = torch.randn(2, 30, 6, dtype=F64)
    q = c.address_to_key(torch.tensor([[1, 29, 8], [0, 0, 15]]), dtype=F64)
    q = q + 0.3 * torch.randn_like(q)
    r = read(memory, q, keys, sharpness=1.7)
    w = torch.softmax(1.7 * q @ keys.T, -1)
    assert torch.allclose(r.weights, w) and torch.allclose(r.values, w @ memory)
    # the dense soft read goes through llamacpu.kernels.pointer_read when it exists
    kernel = pytest.importorskip("llamacpu.kernels.pointer_read")
    calls = []
    real = kernel.pointer_read

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(kernel, "pointer_read", spy)
    read(memory, q, keys, sharpness=1.7, need_weights=False)
    assert calls == [(2, 3, c.width)]


def test_hard_weights_are_exact_one_hots_with_soft_gradients():
    torch.manual_seed(13)
    c = AddressCodec(4)
    keys = c.keys(16, dtype=F64)
    q = (c.address_to_key(torch.tensor([[5, 9]]), dtype=F64) + 0.1 * torch.randn(1, 2, 8,
                                                                               dtype=F64))
    q.requires_grad_()
    w = address_weights(q, keys, hard=True)
    assert torch.equal(w.detach(), torch.zeros(1, 2, 16, dtype=F64).index_put_(
        (torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([5, 9])),
        torch.tensor(1.0, dtype=F64)))
    g = torch.randn(1, 2, 16, dtype=F64)
    (w * g).sum().backward()
    q2 = q.detach().requires_grad_()
    (address_weights(q2, keys) * g).sum().backward()
    assert torch.allclose(q.grad, q2.grad)                               # the softmax's gradient
    with pytest.raises(ValueError, match="shape"):
        straight_through(torch.zeros(2), torch.zeros(3))


@pytest.mark.parametrize("hard", [False, True])
def test_gradients_reach_memory_and_pointers(hard):
    torch.manual_seed(14)
    swm = HybridSWM(SlotLayout(codec=AddressCodec(4)), sharpness=2.0)
    memory = torch.randn(2, 16, 6, requires_grad=True)
    p = (swm.codec.address_to_key(torch.tensor([[2, 11], [7, 7]]))
         + 0.2 * torch.randn(2, 2, 8)).requires_grad_()
    r = swm.read(memory, p, hard=hard)
    new = swm.write(memory, r.weights[:, 0], r.values[:, 1], torch.ones(6), torch.ones(2))
    (new.square().sum() + r.values.sum()).backward()
    assert memory.grad.abs().sum() > 0 and torch.isfinite(memory.grad).all()
    assert p.grad.abs().sum() > 0 and torch.isfinite(p.grad).all()
    # top-k read too
    p.grad = memory.grad = None
    swm.read_topk(memory, p, k=4, hard=hard).values.square().sum().backward()
    assert memory.grad.abs().sum() > 0 and p.grad.abs().sum() > 0


def test_gradcheck_read_write_inc_float64():
    torch.manual_seed(15)
    c = AddressCodec(3)
    keys = c.keys(8, dtype=F64)
    memory = torch.randn(2, 8, 3, dtype=F64, requires_grad=True)
    q = (c.address_to_key(torch.tensor([[1, 6], [3, 3]]), dtype=F64)
         + 0.3 * torch.randn(2, 2, 6, dtype=F64)).requires_grad_()
    gc = torch.autograd.gradcheck
    assert gc(lambda m, p: read(m, p, keys, 1.3).values, (memory, q))
    assert gc(lambda m, p: read(m, p, keys, 1.3).weights, (memory, q))
    assert gc(lambda m: read(m, q.detach(), keys, 1.3, hard=True).values, (memory,))
    assert gc(lambda m, p: read_topk(m, p, c, 3, 1.3).values, (memory, q))
    weights = torch.softmax(torch.randn(2, 8, dtype=F64), -1).requires_grad_()
    value = torch.randn(2, 3, dtype=F64, requires_grad=True)
    erase = torch.rand(2, 3, dtype=F64, requires_grad=True)
    gate = torch.rand(2, dtype=F64, requires_grad=True)
    assert gc(write, (memory, weights, value, erase, gate))
    idx = torch.tensor([[0, 5], [7, 2]])
    assert gc(lambda m, w, v, e, g: write_sparse(m, idx, w, v, e, g),
              (memory, weights[:, :2].detach().requires_grad_(), value, erase, gate))
    assert gc(lambda k: c.inc(k), (q,)) and gc(lambda k: c.shift(k, -3), (q,))


# ============================================================== sparse top-k reads

def test_topk_read_equals_dense_read_in_hard_mode_at_2_20():
    n = 1 << 20
    c = AddressCodec(20)
    g = torch.Generator().manual_seed(16)
    memory = torch.randn(1, n, 4, generator=g)                          # D small: 16 MB
    addr = torch.tensor([0, 1, n - 1, n // 2, 12345, 777777])
    p = c.address_to_key(addr)[None]                                    # [1, P, A]
    p = torch.cat([p, c.shift(p[:, :2], 3)], 1)                        # rotated keys as well
    addr = torch.cat([addr, addr[:2] + 3])
    dense = read(memory, p, c.keys(n), hard=True, need_weights=False)
    assert torch.equal(dense.values[0], memory[0, addr])
    for method in ("trie", "scan"):
        sparse = read_topk(memory, p, c, k=8, hard=True, method=method)
        assert torch.equal(sparse.values, dense.values)
        assert torch.equal(sparse.indices[0, :, 0], addr)
        assert torch.equal(sparse.weights.sum(-1), torch.ones(1, len(addr)))


def test_trie_topk_finds_the_best_k_slots():
    g = torch.Generator().manual_seed(17)
    for n in (5, 1000, 5000):
        c = AddressCodec.for_size(n)
        keys = c.keys(n)
        addr = torch.randint(0, n, (200,), generator=g)
        q = c.address_to_key(addr)
        q = torch.cat([q, q + 0.3 * torch.randn(q.shape, generator=g)])
        k = min(n, 8)
        trie = topk_addresses(c, q, n, k)
        scan = topk_addresses(c, q, n, k, method="scan")
        assert ((0 <= trie) & (trie < n)).all()
        assert torch.equal(trie[:200, 0], addr)
        assert torch.allclose((q[:, None] * keys[trie]).sum(-1),     # the same best scores
                              (q[:, None] * keys[scan]).sum(-1), atol=1e-4)
    with pytest.raises(ValueError, match="k must be"):
        topk_addresses(c, q, n, 0)


def test_soft_topk_read_is_softmax_over_the_candidates():
    torch.manual_seed(18)
    c = AddressCodec(6)
    memory = torch.randn(1, 50, 3)
    q = c.address_to_key(torch.tensor([[10, 49]])) + 0.2 * torch.randn(1, 2, 12)
    r = read_topk(memory, q, c, k=50, sharpness=2.0, method="scan")
    dense = read(memory, q, c.keys(50), sharpness=2.0)
    assert torch.allclose(r.values, dense.values, atol=1e-5)             # k = N: the dense read
    small = read_topk(memory, q, c, k=6, sharpness=2.0)
    assert small.indices.shape == small.weights.shape == (1, 2, 6)
    assert torch.allclose(small.weights.sum(-1), torch.ones(1, 2))


# ============================================================== real programs

def test_replaying_reference_runs_through_hard_mode_memory():
    """Each golden program's run, replayed with memory operations only (fetch at pc, operand
    addresses through pointers incl. [p], INC/DEC on keys, masked writes; the ALU's results
    come from the trace), ends in exactly the interpreter's memory."""
    from llamacpu.core.golden import GOLDEN, load_program
    from llamacpu.core.interp import run

    swm = HybridSWM()
    layout, V = swm.layout, swm.layout.alphabet.size
    one = torch.ones(1)
    chosen: dict[str, tuple] = {}
    for case in GOLDEN:                                   # the longest run ≤ 100 steps each
        if any(s.kind == Kind.WEIGHTS for s in load_program(case.program).slots):
            continue  # WEIGHTS live in the machine's bank, not in slot memory (test_weights)
        res = run(load_program(case.program), case.input, trace=True)
        if res.steps <= 100 and res.steps > chosen.get(case.program, (None, -1))[1]:
            chosen[case.program] = (res, res.steps)
    assert len(chosen) >= 8
    def at(memory, key):  # hard read through a pointer key [1, A]: (slot [1, D], weights [1, N])
        r = swm.read(memory, key[:, None], hard=True)
        return r.values[:, 0], r.weights[:, 0]

    def operand(memory, instr, ins, i):  # operand i's address key: the field, or [p] → p.p0
        key = layout.args(instr)[:, i]
        if ins.modes[i] == Mode.INDIRECT:
            key = layout.get(at(memory, key)[0], "p0")
        return key

    def write_fields(memory, w, old, value, *fields):  # replace fields; EMPTY becomes DATA
        m = layout.mask(*fields)
        new = layout.promote_empty(old) * (1 - m) + value * m
        return swm.write(memory, w, new, layout.mask("kind", *fields), one)

    for res, _ in chosen.values():
        memory = swm.encode([res.image])
        for t in res.trace:
            instr, _ = at(memory, swm.codec.address_to_key(torch.tensor([t.pc])))
            ins = layout.decode(instr)[0]
            assert ins.op == t.op
            if t.write_addr is None:
                continue
            dst = operand(memory, instr, ins, 0)
            assert int(swm.address(dst)) == t.write_addr
            old, w = at(memory, dst)
            if t.op == Op.MOV and ins.modes[1] != Mode.IMMEDIATE:
                src = at(memory, operand(memory, instr, ins, 1))[0]
                memory = swm.write(memory, w, src, layout.mask(*FIELD_NAMES))
            elif t.op in (Op.INC, Op.DEC):
                p = layout.get(old, "p0")
                p = swm.inc(p, hard=True) if t.op == Op.INC else swm.dec(p, hard=True)
                memory = write_fields(memory, w, old, layout.place("p0", p), "p0")
            elif t.op == Op.LEA:
                p = operand(memory, instr, ins, 1)
                memory = write_fields(memory, w, old, layout.place("p0", p), "p0")
            else:
                val = torch.nn.functional.one_hot(torch.tensor([t.result]), V).float()
                memory = write_fields(memory, w, old, layout.place("val", val), "val")
            assert layout.decode(at(memory, dst)[0]) == (t.written,)
        assert swm.decode(memory)[0] == res.memory


# ============================================================== stateful: memory vs a dict

N_SM = 24


class MemoryMatchesDict(RuleBasedStateMachine):
    """Hard-mode HybridSWM operations, the ISA's way, against a dict of Slots."""

    def __init__(self) -> None:
        super().__init__()
        self.swm = HybridSWM(SlotLayout(codec=AddressCodec(5)))
        self.layout = self.swm.layout
        self.model = {i: EMPTY_SLOT for i in range(N_SM)}
        self.memory = self.swm.encode([[EMPTY_SLOT] * N_SM])            # [1, N, D]
        self.keys = self.swm.keys(N_SM)

    def _pointer(self, addr: int) -> torch.Tensor:
        return self.swm.codec.address_to_key(torch.tensor([[addr]]))    # [1, 1, A]

    def _read(self, pointer: torch.Tensor):
        r = self.swm.read(self.memory, pointer, hard=True, keys=self.keys)
        return r.values[:, 0], r.weights[:, 0]                           # [1, D], [1, N]

    def _write_fields(self, addr: int, value: torch.Tensor, *fields: str) -> None:
        """Replace ``fields`` of slot addr; an EMPTY slot becomes DATA (isa)."""
        old, w = self._read(self._pointer(addr))
        keep = self.layout.promote_empty(old) * (1 - self.layout.mask(*fields))
        self.memory = self.swm.write(self.memory, w, keep + value * self.layout.mask(*fields),
                                     self.layout.mask("kind", *fields), torch.ones(1))

    @rule(addr=st.integers(0, N_SM - 1), slot=slots(DEFAULT_ALPHABET, 32))
    def mov_slot(self, addr, slot):
        w = self.swm.address_weights(self.memory, self._pointer(addr), hard=True)[:, 0]
        everything = self.layout.mask(*FIELD_NAMES)
        self.memory = self.swm.write(self.memory, w, self.layout.encode([slot]), everything)
        self.model[addr] = slot

    @rule(addr=st.integers(0, N_SM - 1), val=st.integers(0, DEFAULT_ALPHABET.size - 1))
    def set_val(self, addr, val):
        one_hot = torch.nn.functional.one_hot(torch.tensor([val]), DEFAULT_ALPHABET.size)
        self._write_fields(addr, self.layout.place("val", one_hot.float()), "val")
        self.model[addr] = self.model[addr].with_val(val)

    @rule(addr=st.integers(0, N_SM - 1), to=st.integers(0, N_SM - 1))
    def lea(self, addr, to):
        self._write_fields(addr, self.layout.place("p0", self._pointer(to)[0]), "p0")
        self.model[addr] = self.model[addr].with_ptr(to)

    @rule(addr=st.integers(0, N_SM - 1), up=st.booleans())
    def inc_or_dec(self, addr, up):
        ptr = self.model[addr].ptr + (1 if up else -1)
        assume(0 <= ptr < N_SM)  # the interpreter faults otherwise
        slot, _ = self._read(self._pointer(addr))
        p = self.layout.get(slot, "p0")
        p = self.swm.inc(p, hard=True) if up else self.swm.dec(p, hard=True)
        self._write_fields(addr, self.layout.place("p0", p), "p0")
        self.model[addr] = self.model[addr].with_ptr(ptr)

    @rule(addr=st.integers(0, N_SM - 1))
    def read_direct(self, addr):
        slot, _ = self._read(self._pointer(addr))
        assert self.layout.decode(slot) == (self.model[addr],)

    @rule(addr=st.integers(0, N_SM - 1))
    def read_indirect(self, addr):
        target = self.model[addr].ptr
        assume(target < N_SM)
        slot, _ = self._read(self._pointer(addr))
        through, _ = self._read(self.layout.get(slot, "p0")[:, None])   # [p]: follow p.p0
        sparse = self.swm.read_topk(self.memory, self.layout.get(slot, "p0")[:, None], k=3,
                                    hard=True)
        assert torch.equal(sparse.values[:, 0], through)
        assert self.layout.decode(through) == (self.model[target],)

    @invariant()
    def memory_is_the_dict(self):
        assert self.layout.decode(self.memory[0]) == tuple(self.model[i] for i in range(N_SM))


TestMemoryMatchesDict = MemoryMatchesDict.TestCase
TestMemoryMatchesDict.settings = settings(max_examples=25, stateful_step_count=25,
                                          deadline=None, derandomize=True)
