"""Recurrent cells and layers (profond.nn.rnn) against nn.RNN / nn.LSTM / nn.GRU."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from profond.errors import ConfigError
from profond.nn import rnn as R

D = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)

pytestmark = pytest.mark.usefixtures("one_thread")

# (kind, torch layer, torch cell, extra kwargs)
KINDS = [
    ("rnn", nn.RNN, nn.RNNCell, {"nonlinearity": "tanh"}),
    ("rnn", nn.RNN, nn.RNNCell, {"nonlinearity": "relu"}),
    ("lstm", nn.LSTM, nn.LSTMCell, {}),
    ("gru", nn.GRU, nn.GRUCell, {}),
]
KIND_IDS = ["rnn-tanh", "rnn-relu", "lstm", "gru"]


def _rand(*shape, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D).requires_grad_(requires_grad)


def _pair(kind, torch_cls, kw, num_layers=1, bidirectional=False, batch_first=False,
          d_x=3, d_h=4, seed=0, **ours_kw):
    torch.manual_seed(seed)
    ref = torch_cls(d_x, d_h, num_layers, bidirectional=bidirectional,
                    batch_first=batch_first, **kw).to(D)
    ours = R.Recurrent(kind, d_x, d_h, num_layers, bidirectional=bidirectional,
                       batch_first=batch_first, **kw, **ours_kw).to(D)
    R.copy_from_torch(ours, ref)
    return ours, ref


def _states(s):
    return list(s) if isinstance(s, tuple) else [s]


def _assert_grads_match(ours, ref):
    for p, name, rows, sign in R.torch_parameter_map(ours, ref):
        torch.testing.assert_close(p.grad, sign * getattr(ref, name).grad[rows], **TOL)


def _run_both(ours, ref, x, state=None, loss_seed=5):
    """Forward + backward of the same random linear loss through both modules."""
    xs = [x.detach().clone().requires_grad_(True) for _ in range(2)]
    results = []
    for mod, xi in zip((ours, ref), xs, strict=True):
        st = None if state is None else tuple(s.detach().clone().requires_grad_(True)
                                              for s in _states(state))
        call_st = st if st is None or len(st) > 1 else st[0]
        out, fin = mod(xi) if st is None else mod(xi, call_st)
        w = _rand(*out.shape, seed=loss_seed)
        loss = (out * w).sum() + sum((f * (i + 1)).sum() for i, f in enumerate(_states(fin)))
        loss.backward()
        results.append((out, _states(fin), xi.grad, None if st is None else [s.grad for s in st]))
    return results


# ------------------------------------------------------------------ equality with PyTorch


@pytest.mark.parametrize("kind,torch_cls,_cell,kw", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_layer_matches_torch(kind, torch_cls, _cell, kw, num_layers, bidirectional, batch_first):
    ours, ref = _pair(kind, torch_cls, kw, num_layers, bidirectional, batch_first)
    x = _rand(2, 5, 3) if batch_first else _rand(5, 2, 3)
    n = num_layers * (2 if bidirectional else 1)
    state = tuple(_rand(n, 2, 4, seed=10 + i) for i in range(2 if kind == "lstm" else 1))
    (o1, f1, gx1, gs1), (o2, f2, gx2, gs2) = _run_both(ours, ref, x, state)
    torch.testing.assert_close(o1, o2, **TOL)
    for a, b in zip(f1, f2, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    torch.testing.assert_close(gx1, gx2, **TOL)
    for a, b in zip(gs1, gs2, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    _assert_grads_match(ours, ref)


@pytest.mark.parametrize("kind,torch_cls,_cell,kw", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_variable_lengths_match_packed(kind, torch_cls, _cell, kw, bidirectional, batch_first):
    ours, ref = _pair(kind, torch_cls, kw, 2, bidirectional, batch_first)
    lengths = torch.tensor([3, 5, 1])
    x = _rand(3, 5, 3) if batch_first else _rand(5, 3, 3)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    w = _rand(3, 5, 4 * (2 if bidirectional else 1), seed=3)
    w = w if batch_first else w.transpose(0, 1)

    packed = pack_padded_sequence(x1, lengths, batch_first=batch_first, enforce_sorted=False)
    out_p, fin1 = ref(packed)
    out1, _ = pad_packed_sequence(out_p, batch_first=batch_first, total_length=5)
    out2, fin2 = ours(x2, lengths=lengths)
    torch.testing.assert_close(out1, out2, **TOL)
    for a, b in zip(_states(fin1), _states(fin2), strict=True):
        torch.testing.assert_close(a, b, **TOL)
    # padded steps: zero outputs
    valid = (torch.arange(5)[None, :] < lengths[:, None])
    valid = valid if batch_first else valid.T
    assert (out2[~valid] == 0).all()

    for out, fin in ((out1, fin1), (out2, fin2)):
        loss = (out * w).sum() + sum(f.sum() for f in _states(fin))
        loss.backward()
    torch.testing.assert_close(x1.grad, x2.grad, **TOL)
    _assert_grads_match(ours, ref)

    # a PackedSequence in gives a PackedSequence out, with the same data
    out3, fin3 = ours(pack_padded_sequence(x.clone(), lengths, batch_first=batch_first,
                                           enforce_sorted=False))
    torch.testing.assert_close(out3.data, out_p.data, **TOL)
    for a, b in zip(_states(fin1), _states(fin3), strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kind,_layer,torch_cell,kw", KINDS, ids=KIND_IDS)
def test_cell_matches_torch_cell(kind, _layer, torch_cell, kw):
    torch.manual_seed(0)
    ref = torch_cell(3, 4, **kw).to(D)
    ours = R.make_cell(kind, 3, 4, **kw).to(D)
    R.copy_from_torch(ours, ref)
    x = _rand(2, 3)
    state = tuple(_rand(2, 4, seed=1 + i) for i in range(2 if kind == "lstm" else 1))
    st = state if kind == "lstm" else state[0]
    out1, out2 = ref(x, st), ours(x, st)
    for a, b in zip(_states(out1), _states(out2), strict=True):
        torch.testing.assert_close(a, b, **TOL)
    sum(o.sum() for o in _states(out1)).backward()
    sum(o.sum() for o in _states(out2)).backward()
    _assert_grads_match(ours, ref)
    # no state: zeros, like PyTorch
    for a, b in zip(_states(ref(x)), _states(ours(x)), strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kind,torch_cls,_cell,kw", KINDS, ids=KIND_IDS)
def test_copy_round_trip(kind, torch_cls, _cell, kw):
    torch.manual_seed(1)
    ours = R.Recurrent(kind, 3, 4, 2, bidirectional=True, **kw).to(D)
    ref = torch_cls(3, 4, 2, bidirectional=True, **kw).to(D)
    R.copy_to_torch(ours, ref)
    x = _rand(4, 2, 3)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], **TOL)
    back = R.Recurrent(kind, 3, 4, 2, bidirectional=True, **kw).to(D)
    R.copy_from_torch(back, ref)
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), back.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)


def test_gru_conventions_are_the_same_model():
    """Course (5.19) vs PyTorch convention: same function with W_z, b_z negated."""
    torch.manual_seed(0)
    ref = nn.GRU(3, 4).to(D)
    course = R.GRULayer(3, 4, convention="course").to(D)
    torchc = R.GRULayer(3, 4, convention="torch").to(D)
    R.copy_from_torch(course, ref)
    R.copy_from_torch(torchc, ref)
    c0 = course.cell(0)
    torch.testing.assert_close(c0.W_xz, -ref.weight_ih_l0[4:8])
    torch.testing.assert_close(torchc.cell(0).W_xz, ref.weight_ih_l0[4:8])
    x = _rand(5, 2, 3)
    _, _, tr_c = course(x, return_trace=True)
    _, _, tr_t = torchc(x, return_trace=True)
    torch.testing.assert_close(tr_c[0].values["z"], 1 - tr_t[0].values["z"], **TOL)
    torch.testing.assert_close(course(x)[0], torchc(x)[0], **TOL)


def test_gru_reset_before_follows_eq_5_18():
    torch.manual_seed(0)
    cell = R.GRUCell(3, 4, bias="one", reset_after=False).to(D)
    x, h = _rand(2, 3), _rand(2, 4, seed=1)
    z = torch.sigmoid(x @ cell.W_xz.T + h @ cell.W_hz.T + cell.b_z)
    r = torch.sigmoid(x @ cell.W_xr.T + h @ cell.W_hr.T + cell.b_r)
    h_tilde = torch.tanh(x @ cell.W_xh.T + (r * h) @ cell.W_hh.T + cell.b_h)
    torch.testing.assert_close(cell(x, h), (1 - z) * h + z * h_tilde, **TOL)
    with pytest.raises(ValueError, match="reset_after"):
        R.copy_from_torch(R.GRUCell(3, 4, reset_after=False), nn.GRUCell(3, 4))


def test_copy_rejects_incompatible():
    with pytest.raises(ValueError):
        R.copy_from_torch(R.LSTMLayer(3, 4), nn.GRU(3, 4))
    with pytest.raises(ValueError):
        R.copy_from_torch(R.LSTMLayer(3, 4, 2), nn.LSTM(3, 4, 1))
    with pytest.raises(ValueError, match="bias"):
        R.copy_from_torch(R.LSTMLayer(3, 4, bias="one"), nn.LSTM(3, 4))
    with pytest.raises(ValueError, match="peephole"):
        R.copy_from_torch(R.LSTMLayer(3, 4, peephole=True), nn.LSTM(3, 4))
    with pytest.raises(ConfigError):
        R.Recurrent("transformer", 3, 4)
    # no-bias modules do copy
    ref = nn.LSTM(3, 4, bias=False).to(D)
    ours = R.copy_from_torch(R.LSTMLayer(3, 4, bias=False).to(D), ref)
    x = _rand(3, 2, 3)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], **TOL)


# ------------------------------------------------------------------ parameter counts


@pytest.mark.parametrize("kind,torch_cls", [("rnn", nn.RNN), ("lstm", nn.LSTM), ("gru", nn.GRU)])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, False), (2, True), (3, True)])
def test_param_counts(kind, torch_cls, layers, bidirectional):
    d_x, d_h = 5, 7
    g = {"rnn": 1, "lstm": 4, "gru": 3}[kind]

    def numel(m):
        return sum(p.numel() for p in m.parameters())

    two = R.param_count(kind, d_x, d_h, layers, bidirectional, two_biases=True)
    assert numel(R.Recurrent(kind, d_x, d_h, layers, bidirectional=bidirectional)) == two
    assert numel(torch_cls(d_x, d_h, layers, bidirectional=bidirectional)) == two
    one = R.param_count(kind, d_x, d_h, layers, bidirectional, two_biases=False)
    assert numel(R.Recurrent(kind, d_x, d_h, layers, bidirectional=bidirectional,
                             bias="one")) == one
    none = R.param_count(kind, d_x, d_h, layers, bidirectional, bias=False)
    assert numel(torch_cls(d_x, d_h, layers, bidirectional=bidirectional, bias=False)) == none
    if layers == 1 and not bidirectional:  # the course's table: G d_h (d_h + d_x + 1)
        assert one == g * d_h * (d_h + d_x + 1)
        assert two == g * d_h * (d_h + d_x + 2)


def test_param_count_course_table_and_peephole():
    assert R.param_count("lstm", 10, 20, two_biases=False) == 4 * 20 * (20 + 10 + 1)
    assert R.param_count("gru", 10, 20, two_biases=False) == 3 * 20 * (20 + 10 + 1)
    assert R.param_count("rnn", 10, 20, two_biases=False) == 20 * (20 + 10 + 1)
    for peep, extra in (("full", 3 * 4 * 4), ("diagonal", 3 * 4)):
        m = R.LSTMLayer(3, 4, 2, peephole=peep, bidirectional=True)
        assert sum(p.numel() for p in m.parameters()) == R.param_count(
            "lstm", 3, 4, 2, True, peephole=peep) == R.param_count("lstm", 3, 4, 2, True) + 4 * extra


# ------------------------------------------------------------------ peephole LSTM


@pytest.mark.parametrize("peephole", ["full", "diagonal"])
def test_peephole_gradcheck(peephole):
    torch.manual_seed(0)
    layer = R.LSTMLayer(2, 2, 1, peephole=peephole, bidirectional=True).to(D)
    names = [n for n, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    x = _rand(3, 2, 2, requires_grad=True)
    lengths = torch.tensor([3, 2])

    def f(x, *ps):
        out, (h, c) = functional_call(layer, dict(zip(names, ps, strict=True)), (x,), {"lengths": lengths})
        return out.sum() + h.square().sum() + c.sum()

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)


@pytest.mark.parametrize("peephole", ["full", "diagonal"])
def test_peephole_zero_is_plain_lstm(peephole):
    ours, ref = _pair("lstm", nn.LSTM, {}, 2, True)
    peep = R.LSTMLayer(3, 4, 2, peephole=peephole, bidirectional=True).to(D)
    missing, unexpected = peep.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all(".W_c" in k for k in missing) and len(missing) == 12
    x = _rand(5, 2, 3)
    assert not torch.allclose(peep(x)[0], ref(x)[0])  # random peepholes change the output
    with torch.no_grad():
        for n, p in peep.named_parameters():
            if ".W_c" in n:
                p.zero_()
    ours_out, (h1, c1) = peep(x)
    ref_out, (h2, c2) = ref(x)
    torch.testing.assert_close(ours_out, ref_out, **TOL)
    torch.testing.assert_close(c1, c2, **TOL)


def test_peephole_equations():
    """One step of the full peephole cell against the slides' formulas."""
    torch.manual_seed(0)
    cell = R.LSTMCell(3, 4, bias="one", peephole="full").to(D)
    x, h, c = _rand(2, 3), _rand(2, 4, seed=1), _rand(2, 4, seed=2)

    def lin(g, extra=0.0):
        return x @ getattr(cell, f"W_x{g}").T + h @ getattr(cell, f"W_h{g}").T \
            + getattr(cell, f"b_{g}") + extra

    f = torch.sigmoid(lin("f", c @ cell.W_cf.T))
    i = torch.sigmoid(lin("i", c @ cell.W_ci.T))
    c_new = f * c + i * torch.tanh(lin("c"))
    o = torch.sigmoid(lin("o", c_new @ cell.W_co.T))
    h_new, c_out = cell(x, (h, c))
    torch.testing.assert_close(c_out, c_new, **TOL)
    torch.testing.assert_close(h_new, o * torch.tanh(c_new), **TOL)


# ------------------------------------------------------------------ dropout between layers


def test_dropout_between_layers_only_in_training():
    ours, ref = _pair("lstm", nn.LSTM, {"dropout": 0.5}, 2, True)
    x = _rand(5, 2, 3)
    ours.eval(), ref.eval()
    out_eval, _ = ours(x)
    torch.testing.assert_close(out_eval, ref(x)[0], **TOL)
    torch.testing.assert_close(ours(x)[0], out_eval, rtol=0, atol=0)  # deterministic

    ours.train()
    torch.manual_seed(3)
    out_a, (h_a, _) = ours(x)
    out_b, _ = ours(x)
    assert not torch.allclose(out_a, out_b)  # fresh masks each call
    assert not torch.allclose(out_a, out_eval)
    # no dropout after the last layer: the output holds the last layer's states unscaled
    torch.testing.assert_close(out_a[-1, :, :4], h_a[-2], **TOL)
    torch.testing.assert_close(out_a[0, :, 4:], h_a[-1], **TOL)
    # a one-layer network has nothing to drop
    one, _ = _pair("gru", nn.GRU, {}, 1, dropout=0.5)
    one.train()
    torch.testing.assert_close(one(x)[0], one.eval()(x)[0], rtol=0, atol=0)


def test_dropout_matches_torch_masks():
    """nn.LSTM's CPU path draws its masks with the same dropout call: same seed, same output."""
    ours, ref = _pair("lstm", nn.LSTM, {"dropout": 0.3}, 3, False)
    ours.train(), ref.train()
    x = _rand(4, 2, 3)
    torch.manual_seed(11)
    out1, _ = ref(x)
    torch.manual_seed(11)
    out2, _ = ours(x)
    torch.testing.assert_close(out1, out2, **TOL)


# ------------------------------------------------------------------ truncated BPTT


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_tbptt_chunks_equal_full_forward(kind, batch_first):
    torch.manual_seed(0)
    layer = R.Recurrent(kind, 3, 4, 2, batch_first=batch_first).to(D)
    x = _rand(2, 7, 3) if batch_first else _rand(7, 2, 3)
    full, full_state = layer(x)
    chunks = R.tbptt_chunks(x, 3, batch_first=batch_first)
    assert [c.shape[1 if batch_first else 0] for c in chunks] == [3, 3, 1]
    outs, state = [], None
    for out, st in R.tbptt_forward(layer, x, 3):
        outs.append(out)
        state = st
    torch.testing.assert_close(torch.cat(outs, dim=1 if batch_first else 0), full, **TOL)
    for a, b in zip(_states(state), _states(full_state), strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_tbptt_gradient_stops_at_chunk_boundary(kind):
    torch.manual_seed(0)
    layer = R.Recurrent(kind, 3, 4).to(D)
    x = _rand(6, 2, 3, requires_grad=True)
    first, second = R.tbptt_chunks(x, 3)
    _, state = layer(first)
    out2, _ = layer(second, R.detach_state(state))
    out2.sum().backward()
    assert torch.count_nonzero(x.grad[:3]) == 0
    assert torch.count_nonzero(x.grad[3:]) > 0
    # without detaching, the gradient does reach the first chunk
    x.grad = None
    _, state = layer(first)
    layer(second, state)[0].sum().backward()
    assert torch.count_nonzero(x.grad[:3]) > 0
    assert R.detach_state(None) is None


# ------------------------------------------------------------------ trace and init


@pytest.mark.parametrize("kind,gates", [("rnn", ["h"]),
                                        ("lstm", ["i", "f", "o", "c_tilde", "h", "c"]),
                                        ("gru", ["r", "z", "h_tilde", "h"])])
@pytest.mark.parametrize("batch_first", [False, True])
def test_trace_shapes_and_ranges(kind, gates, batch_first):
    torch.manual_seed(0)
    layer = R.Recurrent(kind, 3, 4, 2, bidirectional=True, batch_first=batch_first).to(D)
    x = _rand(2, 6, 3) if batch_first else _rand(6, 2, 3)
    out, state, traces = layer(x, return_trace=True)
    torch.testing.assert_close(out, layer(x)[0], rtol=0, atol=0)
    assert [(t.layer, t.reverse) for t in traces] == [(0, False), (0, True), (1, False), (1, True)]
    shape = (2, 6, 4) if batch_first else (6, 2, 4)
    for tr in traces:
        assert sorted(tr.values) == sorted(gates)
        assert all(v.shape == shape for v in tr.values.values())
        for g in set(gates) & {"i", "f", "o", "r", "z"}:
            assert tr.values[g].min() >= 0 and tr.values[g].max() <= 1
        assert len(tr.states) == 6
    # the last layer's h trace is the output; states[t] are graph nodes of h_t
    last_f, last_b = traces[-2], traces[-1]
    torch.testing.assert_close(torch.cat([last_f.values["h"], last_b.values["h"]], -1), out)
    h_t, h_k = last_f.states[5][0], last_f.states[2][0]
    (jac_row,) = torch.autograd.grad(h_t[0, 0], h_k, retain_graph=True)
    assert jac_row.abs().sum() > 0
    (jac_20,) = torch.autograd.grad(last_f.states[2][0].sum(), last_f.states[0][0])
    torch.testing.assert_close(h_k, (out[:, 2, :4] if batch_first else out[2, :, :4]))
    assert jac_20.abs().sum() > 0


def test_trace_masks_padded_steps():
    layer = R.LSTMLayer(3, 4).to(D)
    _, (h, c), (tr,) = layer(_rand(5, 2, 3), lengths=[5, 2], return_trace=True)
    assert (tr.values["f"][2:, 1] == 0).all() and (tr.values["c"][2:, 1] == 0).all()
    torch.testing.assert_close(tr.values["c"][1, 1], c[0, 1])
    torch.testing.assert_close(tr.states[4][1][1], c[0, 1])  # state frozen after the end


@pytest.mark.parametrize("scheme", ["orthogonal", "normal", "identity", "default"])
def test_recurrent_init(scheme):
    torch.manual_seed(0)
    layer = R.RNNLayer(3, 16, 2, hh_init=scheme, hh_gain=0.9).to(D)
    w = layer.cell(1).W_hh
    s = torch.linalg.svdvals(w)
    if scheme in ("orthogonal", "identity"):
        torch.testing.assert_close(s, torch.full_like(s, 0.9), rtol=0, atol=1e-6)
    elif scheme == "normal":
        assert 1.0 < s.max() < 2.2  # ≈ 2 · gain for a square Gaussian matrix
    else:
        assert w.abs().max() <= 1 / 16 ** 0.5
    lstm = R.LSTMLayer(3, 4, hh_init="orthogonal")
    for g in ("i", "f", "c", "o"):  # each gate's block separately
        q = getattr(lstm.cell(0), f"W_h{g}")
        torch.testing.assert_close(q @ q.T, torch.eye(4))
    with pytest.raises(ConfigError):
        R.RNNLayer(3, 4, hh_init="xavier")


def test_lstm_sequence_hand_written_bptt_passes_gradcheck():
    """The fused LSTM path (back-propagation through time written from eqs. 5.9-5.14) against
    finite differences, with gradients reaching the outputs and both final states."""
    torch.manual_seed(0)
    gx = torch.randn(5, 3, 8, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    w_h = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(R._LSTMSequence.apply, (gx, h0, c0, w_h))
    # only the final cell state used: the other outputs' gradients arrive as None
    assert torch.autograd.gradcheck(lambda *a: R._LSTMSequence.apply(*a)[2], (gx, h0, c0, w_h))
