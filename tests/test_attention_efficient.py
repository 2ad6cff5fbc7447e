"""Efficient attention of course §6.12 / exercise 6.5: tiled (exact, online softmax), linear
(φ = ELU + 1, eq. 6.21) and local / strided sparse attention, against PyTorch's SDPA or the
explicit O(n²) form; gradients, gradchecks, peak memory (measured) and FLOP scaling."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from profond.errors import ConfigError
from profond.nn.attention.linear import linear_attention, linear_attention_explicit
from profond.nn.attention.local import local_attention, local_mask
from profond.nn.attention.tiled import tiled_attention

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def _qkv(b, h, n_q, n_k, d, d_v=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (b, h) if h else (b,)
    q = torch.randn(*shape, n_q, d, generator=g, dtype=dtype).requires_grad_()
    k = torch.randn(*shape, n_k, d, generator=g, dtype=dtype).requires_grad_()
    v = torch.randn(*shape, n_k, d_v or d, generator=g, dtype=dtype).requires_grad_()
    return q, k, v


def _causal(n_q, n_k):
    """Query i sees key j <= i + (n_k - n_q) (the package's causal_mask convention)."""
    return torch.ones(n_q, n_k, dtype=torch.bool).tril(n_k - n_q)


def _max_gaps(out, ref, inputs):
    g = torch.randn_like(out)
    ga = torch.autograd.grad(out, inputs, g)
    gb = torch.autograd.grad(ref, inputs, g)
    out, ref = out.detach(), ref.detach()
    return float((out - ref).abs().max()), max(float((a - b).abs().max()) for a, b in zip(ga, gb, strict=True))


# ------------------------------------------------------------------------------------------
# tiled


@pytest.mark.parametrize("n_q,n_k,block,q_block,causal", [
    (64, 64, 16, None, False), (64, 64, 16, None, True),
    (100, 100, 32, None, True),  # N not a multiple of the block
    (70, 130, 32, 24, True), (130, 70, 16, None, False),  # Nq != Nk, query blocks too
    (130, 70, 16, 50, True),  # causal, Nq > Nk: the first 60 queries see no key -> 0
    (1, 90, 32, None, True),  # one query of a KV-cache step sees every key
])
def test_tiled_equals_sdpa_fp32(n_q, n_k, block, q_block, causal):
    q, k, v = _qkv(2, 3, n_q, n_k, 16, 8)
    out = tiled_attention(q, k, v, causal=causal, block_size=block, q_block_size=q_block)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=_causal(n_q, n_k) if causal else None)
    gap, grad_gap = _max_gaps(out, ref, (q, k, v))
    assert gap <= 1e-5 and grad_gap <= 1e-5, (gap, grad_gap)
    if causal and n_q > n_k:
        assert out[:, :, : n_q - n_k].abs().max() == 0


def test_tiled_3d_inputs_and_scale():
    q, k, v = _qkv(3, 0, 40, 50, 8)
    out = tiled_attention(q, k, v, block_size=7, scale=0.3)
    ref = F.scaled_dot_product_attention(q, k, v, scale=0.3)
    gap, grad_gap = _max_gaps(out, ref, (q, k, v))
    assert gap <= 1e-5 and grad_gap <= 1e-5


def test_tiled_bf16_close_and_dtype_kept():
    q, k, v = _qkv(1, 2, 96, 96, 32, dtype=torch.bfloat16)
    out = tiled_attention(q, k, v, causal=True, block_size=32).detach()
    assert out.dtype == torch.bfloat16
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True).detach()
    assert float((out.float() - ref).abs().max()) < 3e-2


@pytest.mark.parametrize("causal,n_q,n_k", [(False, 7, 9), (True, 9, 9), (True, 5, 9), (True, 9, 5)])
def test_tiled_gradcheck_float64(causal, n_q, n_k):
    q, k, v = _qkv(1, 1, n_q, n_k, 3, 2, dtype=torch.float64)
    fn = lambda a, b, c: tiled_attention(a, b, c, causal=causal, block_size=4, q_block_size=3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_tiled_bad_shapes_raise():
    q, k, v = _qkv(1, 1, 8, 8, 4)
    with pytest.raises(ConfigError, match="shapes"):
        tiled_attention(q, k[..., :3], v)
    with pytest.raises(ConfigError, match="block_size"):
        tiled_attention(q, k, v, block_size=0)


_PEAK = textwrap.dedent("""
    import re, resource, sys, torch
    torch.set_num_threads(1)
    from profond.nn.attention.tiled import tiled_attention
    impl, n = sys.argv[1], int(sys.argv[2])
    naive = lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1) / 8.0, dim=-1) @ v  # (6.9), n x n
    f = tiled_attention if impl == "tiled" else naive
    def inputs(n):
        return [torch.randn(1, 1, n, 64, requires_grad=True) for _ in range(3)]
    def status(key):  # KiB
        return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))
    f(*inputs(256)).sum().backward()  # warm-up: lazy initialisations out of the measure
    q, k, v = inputs(n)
    try:  # reset the high-water mark to the current RSS (ru_maxrss starts at the parent's RSS)
        open("/proc/self/clear_refs", "w").write("5")
        base, peak = status("VmRSS"), lambda: status("VmHWM")
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    f(q, k, v).sum().backward()
    print(peak() - base)
""")


def _peak_kib(impls: list[str], n: int) -> list[int]:
    """Peak RSS growth of a forward + backward, one fresh process per impl (run side by side)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, "-c", _PEAK, impl, str(n)], stdout=subprocess.PIPE, text=True,
                              env=env, cwd=ROOT) for impl in impls]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return [int(o.split()[-1]) for o in outs]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB is Linux's")
def test_tiled_peak_memory_under_an_eighth_of_naive():
    """Forward + backward at n = 4096, d = 64: the naive path holds n x n matrices (64 MiB each),
    the tiled one only n x block pieces; peak RSS measured in a fresh process each."""
    n = 4096
    naive, tiled = _peak_kib(["naive", "tiled"], n)
    assert naive > 2 * (n * n * 4) // 1024, naive  # the measure sees at least two n x n matrices
    assert tiled * 8 <= naive, (tiled, naive)


# ------------------------------------------------------------------------------------------
# linear


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_q,n_k,chunk", [(50, 50, 16), (64, 64, 64), (33, 70, 8), (70, 33, 8), (1, 20, 4)])
def test_linear_equals_explicit_form(causal, n_q, n_k, chunk):
    q, k, v = _qkv(2, 2, n_q, n_k, 8, 5, dtype=torch.float64)
    out = linear_attention(q, k, v, causal=causal, chunk_size=chunk)
    ref = linear_attention_explicit(q, k, v, causal=causal)
    gap, grad_gap = _max_gaps(out, ref, (q, k, v))
    assert gap <= 1e-10 and grad_gap <= 1e-10, (gap, grad_gap)


def test_linear_explicit_is_the_elu_kernel():
    """Eq. 6.21 by hand, one query: Σ_j φ(q)·φ(k_j) v_j / Σ_j φ(q)·φ(k_j), φ = ELU + 1."""
    q, k, v = _qkv(1, 0, 1, 6, 4, dtype=torch.float64)
    w = (F.elu(q[0, 0]) + 1) @ (F.elu(k[0]) + 1).T  # (6,)
    expected = (w[:, None] * v[0]).sum(0) / (w.sum() + 1e-6)
    assert torch.allclose(linear_attention_explicit(q, k, v)[0, 0], expected)
    assert torch.allclose(linear_attention(q, k, v)[0, 0], expected)


@pytest.mark.parametrize("causal", [False, True])
def test_linear_gradcheck_float64(causal):
    q, k, v = _qkv(1, 1, 10, 10, 3, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: linear_attention(a, b, c, causal=causal, chunk_size=4),
                                    (q, k, v))


def test_linear_fp32_and_bf16():
    q, k, v = _qkv(1, 2, 300, 300, 16)
    with torch.no_grad():
        out = linear_attention(q, k, v, causal=True)
        ref = linear_attention_explicit(q.double(), k.double(), v.double(), causal=True)
        half = linear_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True)
    assert float((out - ref).abs().max()) < 1e-5
    assert half.dtype == torch.bfloat16 and float((half.float() - ref).abs().max()) < 5e-2


def _flops(fn, n: int, backward: bool = True) -> int:
    q, k, v = _qkv(1, 1, n, n, 16)
    with FlopCounterMode(display=False) as fc:
        out = fn(q, k, v)
        if backward:
            out.sum().backward()
    return fc.get_total_flops()


@pytest.mark.parametrize("causal", [False, True])
def test_linear_cost_is_linear_in_n(causal):
    f1, f2 = (_flops(lambda q, k, v: linear_attention(q, k, v, causal=causal), n) for n in (512, 1024))
    assert 1.8 <= f2 / f1 <= 2.2, f2 / f1


# ------------------------------------------------------------------------------------------
# local


def test_local_mask_pattern():
    m = local_mask(5, 5, window=2)
    assert m.tolist() == [[abs(i - j) < 2 for j in range(5)] for i in range(5)]
    c = local_mask(6, 6, window=2, causal=True, stride=3)
    assert c.tolist() == [[0 <= i - j < 2 or (i - j >= 0 and (i - j) % 3 == 0) for j in range(6)] for i in range(6)]
    s = local_mask(4, 7, window=1, stride=2)  # queries at positions 3..6 of the keys
    assert s.tolist() == [[(i + 3 - j) % 2 == 0 for j in range(7)] for i in range(4)]
    assert local_mask(3, 3, 1, causal=True).dtype == torch.bool


@pytest.mark.parametrize("bad", [{"window": 0}, {"window": 2.5}, {"window": 3, "stride": 0}])
def test_local_bad_pattern_raises(bad):
    with pytest.raises(ConfigError, match="window|stride"):
        local_mask(4, 4, **bad)


@settings(max_examples=40, deadline=None)
@given(n_q=st.integers(1, 40), extra=st.integers(0, 30), d=st.integers(1, 9), window=st.integers(1, 12),
       causal=st.booleans(), stride=st.one_of(st.none(), st.integers(1, 9)), heads=st.integers(0, 2),
       seed=st.integers(0, 2**16))
def test_local_equals_sdpa_with_local_mask(n_q, extra, d, window, causal, stride, heads, seed):
    n_k = n_q + extra  # Nq <= Nk: every query sees itself (Nq > Nk is the test below)
    q, k, v = _qkv(2, heads, n_q, n_k, d, 3, dtype=torch.float64, seed=seed)
    out = local_attention(q, k, v, window, causal=causal, stride=stride)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=local_mask(n_q, n_k, window, causal, stride))
    gap, grad_gap = _max_gaps(out, ref, (q, k, v))
    assert gap <= 1e-10 and grad_gap <= 1e-10, (gap, grad_gap)


@pytest.mark.parametrize("causal,stride", [(False, None), (True, None), (True, 3), (False, 4)])
def test_local_more_queries_than_keys_and_fp32(causal, stride):
    q, k, v = _qkv(1, 2, 30, 12, 8)
    out = local_attention(q, k, v, 3, causal=causal, stride=stride)
    mask = local_mask(30, 12, 3, causal, stride)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # rows with no key: 0, as ours
    gap, grad_gap = _max_gaps(out, ref, (q, k, v))
    assert gap <= 1e-5 and grad_gap <= 1e-5
    assert float(out.detach()[..., ~mask.any(-1), :].abs().sum()) == 0


def test_local_cost_grows_as_n_times_w():
    """FLOPs (forward + backward) at 2n are about twice those at n for a fixed window, and far
    below the dense n² path; doubling w about doubles them."""
    local = lambda w: (lambda q, k, v: local_attention(q, k, v, w, causal=True))  # noqa: E731
    f1, f2 = _flops(local(32), 1024), _flops(local(32), 2048)
    assert 1.9 <= f2 / f1 <= 2.1, f2 / f1
    naive = lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1), -1) @ v  # noqa: E731  (SDPA's are not counted)
    dense = _flops(naive, 2048)
    assert f2 * 8 < dense, (f2, dense)
    fw = _flops(local(64), 2048)
    assert 1.6 <= fw / f2 <= 2.2, fw / f2


def test_tiled_causal_skips_masked_blocks():
    """Causal: the key blocks above the diagonal are never computed, so forward + backward
    costs about half the non-causal FLOPs (every block product is a counted bmm)."""
    full = _flops(lambda q, k, v: tiled_attention(q, k, v, block_size=64, q_block_size=64), 1024)
    causal = _flops(lambda q, k, v: tiled_attention(q, k, v, causal=True, block_size=64, q_block_size=64), 1024)
    assert full > 0 and 0.45 <= causal / full <= 0.6, causal / full
