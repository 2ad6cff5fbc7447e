"""Transfer learning through the loop (course §4.7): initialise from a trained run, freeze
the trunk, give the head its own learning rate."""

from __future__ import annotations

import torch

from profond.train import train
from tests.conftest import tiny_cfg
from tests.test_loop import final_weights


def test_finetune_from_run_with_frozen_features(tmp_path):
    pre = train(tiny_cfg(tmp_path / "pre", "train.epochs=3"))
    w0 = final_weights(pre.run_dir)
    ft = train(tiny_cfg(tmp_path / "ft", f"model.init_from={pre.run_dir}", "model.freeze=[features]",
                        "optim.lr_groups={head: 0.01}", "train.epochs=1"))
    w1 = final_weights(ft.run_dir)
    feats = [k for k in w0 if k.startswith("model.features.")]
    heads = [k for k in w0 if k.startswith("model.head.")]
    assert feats and heads
    assert all(torch.equal(w0[k], w1[k]) for k in feats)  # frozen: untouched
    assert not all(torch.equal(w0[k], w1[k]) for k in heads)  # the head was trained
    s = ft.summary
    assert s["parameters"]["model"]["trainable"] < s["parameters"]["model"]["total"]
    assert s["init_from"]["loaded"] == len(w0) and s["init_from"]["skipped"] == []
    assert s["final"]["test_accuracy"] >= pre.summary["final"]["test_accuracy"] - 0.05


def test_finetune_new_head_non_strict(tmp_path):
    """A trunk trained on 10 classes, loaded into a model with another input/head: skips exactly the mismatches."""
    pre = train(tiny_cfg(tmp_path / "pre", "train.epochs=1"))
    from profond.models.transfer import load_weights
    from profond.registry import MODELS

    model = MODELS.build("mlp", in_shape=(1, 8, 8), num_classes=3, widths=[32])
    report = load_weights(model, str(pre.run_dir), strict=False)
    assert report.mismatched and all(k.startswith("head.") for k, *_ in report.mismatched)
    assert any(k.startswith("features.") for k in report.loaded)
