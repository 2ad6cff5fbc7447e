"""The ``lottery-ticket`` experiment (issue 19, course §11.7) in quick mode: iterative magnitude
pruning through the one loop, the mask callback keeping pruned weights exactly 0 in a real
training (and in its saved checkpoint), rewinding / re-initialisation, the crossing of the dense
accuracy and the claims judged on tables whose answers are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import profond.experiments.lottery as lt  # registers the experiment
from profond.experiments import run_training
from profond.metrics.pruning import full_masks, magnitude_masks, prunable_weights
from tests.conftest import run_quick_experiment

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"
DIGITS = ["data.name=digits", "data.val_size=200", "data.batch_size=64", "model.widths=[16]", "optim.lr=3e-3",
          "train.threads=1"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return run_quick_experiment("lottery-ticket", tmp_path_factory)


def test_registered():
    from profond.registry import EXPERIMENTS

    assert "lottery-ticket" in EXPERIMENTS.names()


def _kept(rounds: int) -> list[float]:
    """Remaining fraction of mlp 64-32 on 8x8 digits after each round: 20% per layer, head 10%."""
    sizes = {"features.0.weight": 64 * 64, "features.2.weight": 32 * 64, "head.weight": 10 * 32}
    kept, out = dict(sizes), [1.0]
    for _ in range(rounds):
        kept = {k: n - round((lt.HEAD_RATE if k.startswith("head") else lt.RATE) * n) for k, n in kept.items()}
        out.append(sum(kept.values()) / sum(sizes.values()))
    return out


def test_table_rounds_variants_and_fractions(out):
    t = pd.read_csv(out / "table.csv")
    b = lt.QUICK
    assert len(t) == 1 + 4 * b.rounds
    assert list(t["variant"]) == ["dense", *list(lt.VARIANTS) * b.rounds]
    assert list(t["round"]) == [0, *[r for r in range(1, b.rounds + 1) for _ in lt.VARIANTS]]
    expected = _kept(b.rounds)
    for r in range(b.rounds + 1):  # every variant of a round has the same number of weights per layer
        np.testing.assert_allclose(t.loc[t["round"] == r, "remaining"], expected[r], atol=1e-5)
    assert expected[-1] == pytest.approx(0.4217, abs=1e-4)
    assert t["test_accuracy"].between(0.5, 1.0).all() and t["final_test_accuracy"].between(0.5, 1.0).all()
    # the early-stop iteration is the step at the end of an epoch (1,238 training images: 20 steps of 64)
    assert set(t["early_stop_step"]) <= {20 * e for e in range(1, b.epochs + 1)}
    assert (t["early_stop_epoch"] * 20 == t["early_stop_step"]).all()
    data = (out / "lottery.png").read_bytes()
    assert data[:8] == PNG and len(data) > 10_000


def test_claims_and_measured_effect(out):
    t = pd.read_csv(out / "table.csv")
    s = json.loads((out / "summary.json").read_text())
    claims = s["claims"]
    assert len(claims) == 5
    # quick stops at 42% of the weights: the anchors of 21% and 3.6% are not reached
    assert [v for k, v in claims.items() if "~" in k] == ["not tested"] * 3
    assert claims["tickets beat random re-initialisation at the same sparsity"] in ("holds", "does not hold")
    # the measured effect at the sparsest round (42%): the ticket keeps the dense accuracy (2 SE of the
    # 359 test images), random pruning of the same counts from the same init loses it
    dense = t[t["variant"] == "dense"].iloc[0]
    last = t[t["round"] == lt.QUICK.rounds].set_index("variant")
    tol = 2 * math.sqrt(dense["test_accuracy"] * (1 - dense["test_accuracy"]) / dense["test_examples"])
    assert last.loc["ticket", "test_accuracy"] >= dense["test_accuracy"] - tol
    assert last.loc["random", "test_accuracy"] < last.loc["ticket", "test_accuracy"]
    assert claims["tickets beat random pruning at the same sparsity"] == "holds"
    md = (out / "table.md").read_text()
    assert "crosses the dense accuracy" in md or "never falls below" in md or "from the first round" in md
    assert set(s["numbers"]["digits"]["crosses_dense_at"]) == set(lt.VARIANTS)


def test_callback_keeps_pruned_weights_zero_through_training(tmp_path):
    from profond.train import load_run

    dense = lt.MaskCallback(snapshot_step=5)
    run_training(tmp_path, "dense", [*DIGITS, "train.epochs=1"], callbacks=[dense])
    assert dense.start is not None and dense.final is not None and dense.snapshot is not None
    assert len(dense.epochs) == 1 and dense.epochs[0]["step"] == 20
    w = {k: dense.final[k] for k in dense.dense_masks}
    masks = magnitude_masks(w, dense.dense_masks, 0.7)
    # a ticket: the dense init times the mask, trained 2 epochs with Adam (whose moments would move pruned weights)
    cb = lt.MaskCallback(dense.start, masks)
    res, _ = run_training(tmp_path, "ticket", [*DIGITS, "train.epochs=2"], callbacks=[cb])
    assert res.summary["status"] == "completed" and len(cb.epochs) == 2
    for k, m in masks.items():
        assert torch.equal(cb.start[k], dense.start[k] * m)  # started from θ0 ⊙ m
        assert (cb.final[k][~m] == 0).all()  # pruned weights exactly 0 after training
        assert (cb.final[k][m] != cb.start[k][m]).float().mean() > 0.9  # the kept ones trained
    for k in dense.start:
        if k.endswith("bias"):  # biases are never masked and train freely
            assert not torch.equal(cb.final[k], dense.start[k])
    method, _ = load_run(res.run_dir, device="cpu")  # the saved checkpoint is masked too
    saved = dict(method.nets["model"].named_parameters())
    for k, m in masks.items():
        assert (saved[k].detach()[~m] == 0).all()
    # rewinding: the snapshot after step 5 is another point than θ0; a run from it starts at θ5 ⊙ m
    rw = lt.MaskCallback(dense.snapshot, masks)
    run_training(tmp_path, "rewind", [*DIGITS, "train.epochs=1"], callbacks=[rw])
    k0 = next(iter(masks))
    assert not torch.equal(dense.snapshot[k0], dense.start[k0])
    assert torch.equal(rw.start[k0], dense.snapshot[k0] * masks[k0])
    # re-initialisation: same mask, new weights drawn like θ0 (the kept weights of θ0 are larger than
    # average: magnitude pruning keeps them), not θ0
    ri = lt.MaskCallback(dense.start, masks, reinit_seed=123)
    run_training(tmp_path, "reinit", [*DIGITS, "train.epochs=1"], callbacks=[ri])
    for k, m in masks.items():
        assert (ri.start[k][~m] == 0).all() and (ri.final[k][~m] == 0).all()
        assert not torch.equal(ri.start[k][m], dense.start[k][m])
        ratio = ri.start[k][m].std() / dense.start[k].std()
        assert 0.8 < ratio < 1.25, (k, ratio)


def test_prunable_layers_of_the_mlp():
    from profond.registry import MODELS

    net = MODELS.build("mlp", in_shape=(1, 8, 8), num_classes=10, widths=[64, 32])
    assert list(prunable_weights(net)) == ["features.0.weight", "features.2.weight", "head.weight"]
    assert lt._rates(full_masks(net)) == {"features.0.weight": 0.2, "features.2.weight": 0.2, "head.weight": 0.1}


def test_crossing_of_the_dense_accuracy():
    f = [0.8, 0.4, 0.2, 0.1]
    curve = pd.DataFrame({"remaining": f, "test_accuracy": [0.91, 0.93, 0.92, 0.86]})
    # last at or above 0.90 is 0.2 (0.92), next 0.1 (0.86): a third of the way in log fraction
    assert lt.crossing(curve, 0.90) == pytest.approx(math.exp(math.log(0.2) + (1 / 3) * math.log(0.5)))
    assert lt.crossing(curve, 0.95) is None
    assert lt.crossing(curve, 0.85) == 0.0


def _synthetic(acc_ticket, step_ticket, acc_reinit, n=10_000):
    fr = [0.8 ** r for r in range(1, 16)]
    rows = [{"variant": "dense", "round": 0, "remaining": 1.0, "test_accuracy": 0.90, "early_stop_step": 1000,
             "test_examples": n}]
    for r, f in enumerate(fr, start=1):
        for v in lt.VARIANTS:
            acc = {"ticket": acc_ticket(f), "rewind": acc_ticket(f), "reinit": acc_reinit(f), "random": acc_reinit(f)}[v]
            rows.append({"variant": v, "round": r, "remaining": f, "test_accuracy": acc,
                         "early_stop_step": step_ticket(f) if v in ("ticket", "rewind") else 1200, "test_examples": n})
    return pd.DataFrame(rows)


def test_claims_on_known_tables():
    # Frankle & Carbin's shape: above dense down to ~10%, back to dense at ~3.6%, reinit below, tickets faster
    good = _synthetic(lambda f: 0.90 if f < 0.05 else 0.915, lambda f: 700, lambda f: 0.88)
    claims, nums, _ = lt.judge(good)
    assert set(claims.values()) == {"holds"}, claims
    assert nums["ticket_~21%"]["remaining"] == pytest.approx(0.8 ** 7)
    assert nums["ticket_~3.6%"]["remaining"] == pytest.approx(0.8 ** 15)
    assert nums["crosses_dense_at"]["ticket"] == 0.0 and nums["crosses_dense_at"]["reinit"] is None
    # the opposite: tickets below dense and slower, no better than reinit, far below dense at 3.6%
    bad = _synthetic(lambda f: 0.85, lambda f: 1500, lambda f: 0.86)
    claims, _, _ = lt.judge(bad)
    assert set(claims.values()) == {"does not hold"}, claims
