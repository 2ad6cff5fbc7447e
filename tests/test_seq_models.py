"""Sequence models of chapters 5–6: rnn-classifier, char-lm, rnn-forecaster, seq2seq."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from profond.errors import ConfigError
from profond.models.rnn import CharLM, RNNClassifier, RNNForecaster, copy_weights
from profond.models.seq2seq import Seq2Seq
from profond.nn.rnn import Recurrent
from profond.registry import MODELS

torch.set_num_threads(1)

PAD, BOS, EOS = 0, 1, 2
V = 9


def _tokens(batch=3, steps=6, seed=0, low=3, high=V):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (batch, steps), generator=g)


def _pair(cls, seed=0, **kw):
    """A model with impl="torch" and one with impl="profond" holding the same weights."""
    torch.manual_seed(seed)
    ref = cls(impl="torch", **kw).eval()
    torch.manual_seed(seed + 100)
    ours = cls(impl="profond", **kw).eval()
    return ref, copy_weights(ours, ref)


# ----------------------------------------------------------------------------------------
# registry


def test_registered_and_configurable():
    for name in ("rnn-classifier", "char-lm", "rnn-forecaster", "seq2seq"):
        assert name in MODELS.names()
    m = MODELS.build("rnn-classifier", vocab_size=20, kind="gru", pool="max", impl="profond")
    assert isinstance(m.rnn, Recurrent) and m.rnn.kind == "gru"
    s = MODELS.build("seq2seq", src_vocab=12, tgt_vocab=7, attention="luong-concat")
    assert s.out.out_features == 7
    for name, bad in [("rnn-classifier", {"pool": "sum"}), ("rnn-classifier", {"kind": "tcn"}),
                      ("char-lm", {"impl": "cudnn"}), ("seq2seq", {"attention": "cosine"}),
                      ("char-lm", {"tie_weights": True, "embed_dim": 8, "hidden_size": 16})]:
        with pytest.raises(ConfigError):
            MODELS.build(name, **bad)


def test_course_sentiment_lstm_parameter_count():
    """§5.8's SentimentLSTM (vocab 1000, 128/256, 2 layers, BiLSTM, 128-unit head).

    The course prints 1 447 170, which its own layers do not add up to: embedding
    128 000 + BiLSTM 790 528 + 1 576 960 (4 d_h (d_h + d_x + 2) per direction) + head
    65 794 = 2 561 410, what nn.LSTM has too.
    """
    m = MODELS.build("rnn-classifier", vocab_size=1000, embed_dim=128, hidden_size=256,
                     num_layers=2, dropout=0.3, head_hidden=128)
    assert sum(p.numel() for p in m.parameters()) == 2_561_410


# ----------------------------------------------------------------------------------------
# rnn-classifier


@pytest.mark.parametrize("kind,bidirectional,pool",
                         [("lstm", True, "last"), ("gru", False, "mean"), ("rnn", True, "max")])
def test_classifier_shapes_and_impl_equivalence(kind, bidirectional, pool):
    kw = dict(vocab_size=V, num_classes=4, embed_dim=5, hidden_size=6, num_layers=2,
              kind=kind, bidirectional=bidirectional, pool=pool)
    ref, ours = _pair(RNNClassifier, **kw)
    x, lengths = _tokens(), torch.tensor([6, 2, 4])
    out = ref(x, lengths)
    assert out.shape == (3, 4)
    assert torch.allclose(ours(x, lengths), out, atol=1e-5)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)
    assert not torch.allclose(ref(x), out, atol=1e-3)  # lengths matter


@pytest.mark.parametrize("impl,pool", list(itertools.product(["torch", "profond"],
                                                                ["last", "mean", "max"])))
def test_classifier_padding_invariance(impl, pool):
    torch.manual_seed(0)
    m = RNNClassifier(V, 3, embed_dim=5, hidden_size=6, bidirectional=True, pool=pool,
                      impl=impl).eval()
    x = _tokens(steps=4)
    lengths = torch.tensor([4, 2, 3])
    short = x.clone()
    for b, n in enumerate(lengths.tolist()):
        short[b, n:] = PAD
    junk = torch.cat([x, _tokens(steps=5, seed=1)], 1)   # non-pad junk after every length
    ref = m(short, lengths)
    assert torch.allclose(m(junk, lengths), ref, atol=1e-5)
    # each sequence alone, unpadded, gives the same output
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(m(x[b:b + 1, :n]), ref[b:b + 1], atol=1e-5)


# ----------------------------------------------------------------------------------------
# char-lm


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_char_lm_stepwise_equals_full_forward(kind):
    ref, ours = _pair(CharLM, vocab_size=V, embed_dim=5, hidden_size=7, num_layers=2, kind=kind)
    x = _tokens(2, 7)
    logits, state = ref(x)
    assert logits.shape == (2, 7, V)
    assert torch.allclose(ours(x)[0], logits, atol=1e-5)
    for model in (ref, ours):
        st, steps = None, []
        for t in range(x.shape[1]):
            out, st = model(x[:, t:t + 1], st)
            steps.append(out)
        assert torch.allclose(torch.cat(steps, 1), logits, atol=1e-5)
    # chunked reading (truncated BPTT) carries the state too
    a, st = ref(x[:, :3])
    b, _ = ref(x[:, 3:], st)
    assert torch.allclose(torch.cat([a, b], 1), logits, atol=1e-6)


def test_char_lm_generate():
    torch.manual_seed(0)
    m = CharLM(V, embed_dim=4, hidden_size=8, num_layers=1).eval()
    prompt = _tokens(2, 3)
    greedy = m.generate(prompt, 5, temperature=0)
    assert greedy.shape == (2, 8) and torch.equal(greedy[:, :3], prompt)
    seq = prompt
    for _ in range(5):                                   # re-reading everything each time
        seq = torch.cat([seq, m(seq)[0][:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy, seq)
    s1 = m.generate(prompt, 6, generator=torch.Generator().manual_seed(3), top_k=3)
    s2 = m.generate(prompt, 6, generator=torch.Generator().manual_seed(3), top_k=3)
    assert torch.equal(s1, s2)
    tied = CharLM(V, embed_dim=8, hidden_size=8, tie_weights=True)
    assert tied.head.weight is tied.embedding.weight


# ----------------------------------------------------------------------------------------
# rnn-forecaster


@pytest.mark.parametrize("kind,horizon", [("lstm", 1), ("gru", 3)])
def test_forecaster_shapes_and_impl_equivalence(kind, horizon):
    ref, ours = _pair(RNNForecaster, hidden_size=6, num_layers=2, kind=kind, horizon=horizon)
    x = torch.randn(4, 10, 1)
    out = ref(x)
    assert out.shape == (4, horizon)
    assert torch.allclose(ref(x[..., 0]), out)                          # (B, T) accepted
    assert torch.allclose(ours(x), out, atol=1e-5)


def test_forecaster_recursive_equals_rereading_the_window():
    torch.manual_seed(0)
    m = RNNForecaster(hidden_size=5, horizon=2).eval()
    x = torch.randn(3, 8)
    rec = m.recursive(x, 4)
    assert rec.shape == (3, 4)
    seq = x
    for k in range(4):
        nxt = m(seq)[:, :1]
        assert torch.allclose(rec[:, k:k + 1], nxt, atol=1e-5)
        seq = torch.cat([seq, nxt], 1)


# ----------------------------------------------------------------------------------------
# seq2seq

ATTN = ["none", "bahdanau", "luong-dot", "luong-general", "luong-concat"]


def _s2s(attention="bahdanau", seed=0, kind="lstm", impl="torch", **kw):
    torch.manual_seed(seed)
    opts = dict(embed_dim=6, hidden_size=5, kind=kind, attention=attention, padding_idx=PAD)
    opts.update(kw)
    return Seq2Seq(V, V, impl=impl, **opts).eval()


SRC = _tokens(3, 5, seed=7)
SRC_LEN = torch.tensor([5, 3, 2])


@pytest.mark.parametrize("attention", ATTN)
def test_seq2seq_teacher_forcing_shapes_and_impl(attention):
    kind = "gru" if attention == "luong-dot" else "lstm"
    ref = _s2s(attention, kind=kind, num_layers=2)
    ours = copy_weights(_s2s(attention, seed=1, kind=kind, num_layers=2, impl="profond"), ref)
    tgt_in = _tokens(3, 4, seed=8)
    out = ref(SRC, SRC_LEN, tgt_in)
    assert out.logits.shape == (3, 4, V)
    if attention == "none":
        assert out.attention is None
    else:
        a = out.attention
        assert a.shape == (3, 4, 5)
        assert torch.allclose(a.sum(-1), torch.ones(3, 4), atol=1e-6)
        assert (a[1, :, 3:] == 0).all() and (a[2, :, 2:] == 0).all()  # padded source
    assert torch.allclose(ours(SRC, SRC_LEN, tgt_in).logits, out.logits, atol=1e-5)
    # padded source positions carry no information: junk there changes nothing
    junk = SRC.clone()
    junk[1, 3:], junk[2, 2:] = 4, 5
    assert torch.allclose(ref(junk, SRC_LEN, tgt_in).logits, out.logits, atol=1e-6)


def test_seq2seq_scheduled_sampling():
    m = _s2s("luong-general")
    tgt_in = torch.cat([torch.full((3, 1), BOS), _tokens(3, 5, seed=9)], 1)
    tf = m(SRC, SRC_LEN, tgt_in).logits
    assert torch.equal(m(SRC, SRC_LEN, tgt_in, teacher_forcing=1.0).logits, tf)
    # p = 0: the model reads its own argmax, exactly as greedy decoding does
    free = m(SRC, SRC_LEN, tgt_in, teacher_forcing=0.0).logits
    greedy = m.greedy_decode(SRC, SRC_LEN, max_len=6, bos=BOS, eos=-1)   # no eos: 6 steps
    assert torch.equal(free.argmax(-1), greedy.tokens)
    assert not torch.allclose(free, tf)
    # p = 0.5: reproducible given the generator, and between the two extremes
    a = m(SRC, SRC_LEN, tgt_in, 0.5, torch.Generator().manual_seed(0)).logits
    b = m(SRC, SRC_LEN, tgt_in, 0.5, torch.Generator().manual_seed(0)).logits
    assert torch.equal(a, b)
    assert not torch.allclose(a, tf) and not torch.allclose(a, free)
    with pytest.raises(ConfigError):
        m(SRC, SRC_LEN, tgt_in, teacher_forcing=1.5)


@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong-dot"])
def test_greedy_equals_beam_one(attention):
    m = _s2s(attention, seed=3)
    g = m.greedy_decode(SRC, SRC_LEN, max_len=6, bos=BOS, eos=EOS)
    b = m.beam_search(SRC, SRC_LEN, beam=1, max_len=6, bos=BOS, eos=EOS)
    assert torch.equal(g.tokens, b.tokens) and torch.equal(g.lengths, b.lengths)
    assert torch.allclose(g.scores, b.scores, atol=1e-5)
    if attention == "none":
        assert g.attention is None and b.attention is None
    else:
        assert torch.allclose(g.attention, b.attention, atol=1e-6)
    # the reported scores are the model's log-probabilities of the outputs
    assert torch.allclose(m.log_prob(SRC, SRC_LEN, g.tokens, g.lengths, BOS), g.scores,
                          atol=1e-5)


def test_beam_finds_at_least_greedys_log_prob():
    for seed in range(5):
        m = _s2s("bahdanau", seed=seed, hidden_size=8)
        src = _tokens(4, 5, seed=seed)
        lens = torch.tensor([5, 4, 3, 1])
        g = m.greedy_decode(src, lens, max_len=5, bos=BOS, eos=EOS)
        b = m.beam_search(src, lens, beam=4, max_len=5, bos=BOS, eos=EOS)
        lp_g = m.log_prob(src, lens, g.tokens, g.lengths, BOS)
        lp_b = m.log_prob(src, lens, b.tokens, b.lengths, BOS)
        assert torch.allclose(lp_b, b.scores, atol=1e-5)
        assert (lp_b >= lp_g - 1e-5).all(), (seed, lp_b, lp_g)


@pytest.mark.parametrize("eos", [3, -1])
def test_wide_beam_is_exhaustive_search(eos):
    """With beam >= V^(max_len-1) nothing is pruned: beam search = brute force argmax.

    ``eos=-1`` (never produced): all V^4 outputs have length 4 — tests the pruning and
    the reordering of states; ``eos=3``: outputs end at their first <eos>.
    """
    vocab, max_len = 4, 4
    torch.manual_seed(2)
    m = Seq2Seq(vocab, vocab, embed_dim=4, hidden_size=8, attention="luong-concat").eval()
    with torch.no_grad():                          # peakier, history-dependent outputs
        for p in m.parameters():
            p.mul_(3.0 if p.dim() > 1 else 1.0)
    src = _tokens(3, 4, seed=2, low=1, high=vocab)
    lens = torch.tensor([4, 2, 3])
    b = m.beam_search(src, lens, beam=vocab ** (max_len - 1), max_len=max_len, bos=1, eos=eos)
    hyps = set()                                   # every output, cut after its first <eos>
    for seq in itertools.product(range(vocab), repeat=max_len):
        cut = seq.index(eos) + 1 if eos in seq else max_len
        hyps.add(seq[:cut])
    hyps = sorted(hyps)
    toks = torch.tensor([list(h) + [PAD] * (max_len - len(h)) for h in hyps])
    lens_h = torch.tensor([len(h) for h in hyps])
    g = m.greedy_decode(src, lens, max_len=max_len, bos=1, eos=eos)
    for i in range(3):
        n = len(hyps)
        lp = m.log_prob(src[i:i + 1].expand(n, -1), lens[i:i + 1].expand(n), toks, lens_h, 1)
        best = int(lp.argmax())
        assert b.lengths[i] == lens_h[best]
        assert torch.equal(b.tokens[i, : lens_h[best]], toks[best, : lens_h[best]])
        assert torch.allclose(b.scores[i], lp[best], atol=1e-5)
        assert b.scores[i] >= g.scores[i] - 1e-6
    if eos == -1:
        assert not torch.equal(b.tokens, g.tokens)  # the search beats greedy somewhere
    # the attention returned is the one of the chosen hypothesis (teacher-forced again)
    tgt_in = torch.cat([torch.ones(3, 1, dtype=torch.long), b.tokens[:, :-1]], 1)
    a = m(src, lens, tgt_in).attention
    for i in range(3):
        n = int(b.lengths[i])
        assert torch.allclose(b.attention[i, :n], a[i, :n], atol=1e-6)


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_eos_stops_and_pads(decoder):
    m = _s2s("bahdanau", seed=4)
    with torch.no_grad():
        m.out.bias[EOS] += 1.5                                         # make <eos> common

    def decode(model):
        if decoder == "greedy":
            return model.greedy_decode(SRC, SRC_LEN, max_len=8, bos=BOS, eos=EOS)
        return model.beam_search(SRC, SRC_LEN, beam=3, max_len=8, bos=BOS, eos=EOS)

    d = decode(m)
    steps = d.tokens.shape[1]
    assert d.attention.shape == (3, steps, 5)
    ended = 0
    for b in range(3):
        n = int(d.lengths[b])
        body = d.tokens[b, :n].tolist()
        assert EOS not in body[:-1]
        if n < steps or body[-1] == EOS:
            assert body[-1] == EOS
            ended += 1
        assert (d.tokens[b, n:] == PAD).all()
        assert (d.attention[b, n:] == 0).all()
        assert torch.allclose(d.attention[b, :n].sum(-1), torch.ones(n), atol=1e-6)
    assert ended >= 1
    # every sequence ends at once: decoding stops after one step
    with torch.no_grad():
        m.out.bias[EOS] += 100.0
    d = decode(m)
    assert d.tokens.tolist() == [[EOS]] * 3 and d.lengths.tolist() == [1, 1, 1]


def test_length_penalty_prefers_longer_outputs():
    for seed in range(3):
        m = _s2s("bahdanau", seed=seed, hidden_size=8)
        with torch.no_grad():
            m.out.bias[EOS] += 2.0
        raw = m.beam_search(SRC, SRC_LEN, beam=4, max_len=6, bos=BOS, eos=EOS)
        pen = m.beam_search(SRC, SRC_LEN, beam=4, max_len=6, bos=BOS, eos=EOS,
                            length_penalty=2.0)
        assert (pen.lengths >= raw.lengths).all()
        assert (pen.scores <= raw.scores + 1e-6).all()


def _reversal_batch(g, n, max_len=6, vocab=8):
    """Toy task: output = reversed input, then <eos>; tokens 3..vocab-1, lengths 2..max_len."""
    lens = torch.randint(2, max_len + 1, (n,), generator=g)
    src = torch.zeros(n, max_len, dtype=torch.long)
    tgt = torch.zeros(n, max_len + 1, dtype=torch.long)
    for i, k in enumerate(lens.tolist()):
        s = torch.randint(3, vocab, (k,), generator=g)
        src[i, :k] = s
        tgt[i, :k] = s.flip(0)
        tgt[i, k] = EOS
    return src, lens, tgt


def test_attention_seq2seq_overfits_reversal():
    """A tiny Bahdanau model learns to reverse sequences of length <= 6 in 120 Adam steps."""
    vocab = 8
    torch.manual_seed(0)
    m = Seq2Seq(vocab, vocab, embed_dim=16, hidden_size=16, attention="bahdanau")
    opt = torch.optim.Adam(m.parameters(), lr=0.03)
    g = torch.Generator().manual_seed(0)
    for _ in range(120):
        src, lens, tgt = _reversal_batch(g, 32)
        tgt_in = torch.cat([torch.full((32, 1), BOS), tgt[:, :-1]], 1)
        logits = m(src, lens, tgt_in).logits
        loss = F.cross_entropy(logits.reshape(-1, vocab), tgt.reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    src, lens, tgt = _reversal_batch(torch.Generator().manual_seed(123), 200)
    d = m.greedy_decode(src, lens, max_len=7, bos=BOS, eos=EOS)
    out = torch.full_like(tgt, PAD)
    out[:, : d.tokens.shape[1]] = d.tokens
    exact = (out == tgt).all(1).float().mean().item()
    assert exact >= 0.9, exact
    # attention aligns output i with source position len-1-i (anti-diagonal)
    a = d.attention
    i = int(torch.nonzero(lens == 6)[0])
    assert (a[i, :6].argmax(-1) == torch.arange(5, -1, -1)).float().mean() >= 0.8
