"""VQ-VAE (course §9.7, exercise 9.5): quantiser (eq. 9.24), straight-through estimator
(remark 9.9), losses of eq. (9.25), EMA codebook, dead-code restart, the ``vqvae`` method
(learning on digits, code export, exact resume)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from profond.config import resolve
from profond.errors import ConfigError, ProfondError
from profond.methods.vqvae import VQVAEMethod, export_codes
from profond.models.vqvae import VectorQuantizer
from profond.registry import MODELS
from profond.train import train
from profond.train.loop import load_run

# tiny conv nets: one intra-op thread is much faster than two on a shared CPU
pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["model.num_codes=32", "model.code_dim=8", "model.hidden=32", "model.res_hidden=16"]


def vq_cfg(out: Path, *overrides: str):
    """A seconds-long VQ-VAE run on scikit-learn digits (8x8 images -> 2x2 code grid)."""
    return resolve(overrides=[
        "model.name=vqvae", *SMALL, "model.restart_after=5", "data.name=digits", "data.val_size=200",
        "data.batch_size=64", "optim.lr=1e-2", "train.epochs=2", "train.quiet=true", "train.device=cpu",
        f"out={out}", "name=run", *overrides,
    ])


def model_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["path"]
    return load_file(str(run_dir / "checkpoints" / latest / "model.safetensors"))


# ----------------------------------------------------------------------------------------
# the quantiser


def test_nearest_code_is_the_brute_force_argmin():
    torch.manual_seed(0)
    q = VectorQuantizer(50, 8, ema=False).double()
    with torch.no_grad():
        q.embedding.normal_()
    z = torch.randn(300, 8, dtype=torch.float64)
    assert torch.equal(q.nearest(z), torch.cdist(z, q.embedding.detach()).argmin(1))
    # float32: the chosen code is at the minimal distance (up to rounding)
    q32 = q.float()
    z32 = z.float()
    d = torch.cdist(z32, q32.embedding.detach())
    chosen = d.gather(1, q32.nearest(z32)[:, None]).squeeze(1)
    assert torch.allclose(chosen, d.min(1).values, atol=1e-5)


def test_straight_through_gradient_equals_gradient_wrt_z_q():
    torch.manual_seed(0)
    q = VectorQuantizer(16, 4, ema=True)
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = q(z_e)
    z_q = out["z_q"]
    z_q.retain_grad()
    assert torch.allclose(z_q, q.lookup(out["indices"]), atol=1e-6)  # value: the codes
    w = torch.randn_like(z_q)
    ((z_q * w).sum() + z_q.pow(3).sum()).backward()
    assert torch.equal(z_e.grad, z_q.grad)  # remark 9.9: the gradient is copied unchanged


def test_codebook_loss_reaches_only_codebook_and_commitment_only_encoder():
    torch.manual_seed(0)
    enc = nn.Conv2d(1, 4, 1)
    q = VectorQuantizer(8, 4, ema=False)
    x = torch.randn(2, 1, 3, 3)
    q(enc(x))["codebook_loss"].backward()
    assert enc.weight.grad is None and enc.bias.grad is None
    assert q.embedding.grad is not None and q.embedding.grad.abs().sum() > 0
    q.embedding.grad = None
    q(enc(x))["commitment"].backward()
    assert q.embedding.grad is None
    assert enc.weight.grad.abs().sum() > 0
    # eq. 9.25 weighting: vq_loss = codebook + beta * commitment; EMA drops the codebook term
    out = q(enc(x))
    assert torch.allclose(out["vq_loss"], out["codebook_loss"] + 0.25 * out["commitment"])
    q_ema = VectorQuantizer(8, 4, beta=0.5, ema=True)
    out = q_ema(enc(x))
    assert torch.allclose(out["vq_loss"], 0.5 * out["commitment"])
    assert not any(p is q_ema.embedding for p in q_ema.parameters())  # a buffer, not trained


def test_ema_update_matches_hand_computation():
    q = VectorQuantizer(3, 2, decay=0.5, eps=1e-5, restart_after=0, ema=True)
    e0 = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    q.embedding.copy_(e0)
    q.ema_sum.copy_(e0)
    z = torch.tensor([[0.1, 0.0], [0.9, 1.1], [1.1, 0.9], [0.2, 0.2]])  # -> codes 0, 1, 1, 0
    z_e = z.t().reshape(1, 2, 1, 4)
    idx = q.quantize(z_e)
    assert idx.flatten().tolist() == [0, 1, 1, 0]
    stats = q.update(z_e, idx)
    # N = 0.5*1 + 0.5*n, n = (2, 2, 0);  m = 0.5*e0 + 0.5*(sum of assigned z)
    n_k = torch.tensor([1.5, 1.5, 0.5])
    m_k = torch.tensor([[0.15, 0.10], [1.5, 1.5], [2.5, 2.5]])
    total, eps = 3.5, 1e-5
    smoothed = (n_k + eps) / (total + 3 * eps) * total  # Laplace smoothing
    assert torch.allclose(q.ema_count, n_k) and torch.allclose(q.ema_sum, m_k)
    assert torch.allclose(q.embedding, m_k / smoothed[:, None], atol=1e-6)
    assert torch.allclose(q.embedding, torch.tensor([[0.1, 0.2 / 3], [1.0, 1.0], [5.0, 5.0]]), atol=1e-4)
    assert q.unused_steps.tolist() == [0, 0, 1] and int(q.updates) == 1
    assert stats["usage"] == pytest.approx(2 / 3) and stats["perplexity"] == pytest.approx(2.0)


@pytest.mark.parametrize("ema", [True, False])
def test_dead_code_restart_revives_unused_codes_deterministically(ema):
    def run(seed: int) -> VectorQuantizer:
        torch.manual_seed(0)
        q = VectorQuantizer(6, 3, ema=ema, restart_after=2, seed=seed)
        with torch.no_grad():
            q.embedding.zero_()
            q.embedding[0] = 1.0
        z_e = torch.randn(2, 3, 4, 4) * 0.1 + 1.0  # every vector is nearest to code 0
        for _ in range(2):
            idx = q.quantize(z_e)
            assert (idx == 0).all()
            stats = q.update(z_e, idx)
        assert stats["restarts"] == 5
        rows = VectorQuantizer.flatten(z_e)
        for k in range(1, 6):  # each revived code is one of the batch's encoder outputs
            assert (rows == q.embedding[k]).all(1).any()
        assert q.unused_steps.tolist() == [0] * 6
        if ema:
            assert torch.equal(q.ema_sum[1:], q.embedding[1:]) and (q.ema_count[1:] == 1).all()
        assert len(torch.unique(q.quantize(z_e))) > 1  # revived codes now win some vectors
        return q

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.embedding, b.embedding)
    assert not torch.equal(a.embedding, c.embedding)


def test_model_shapes_and_config_errors():
    m = MODELS.build("vqvae", in_shape=[1, 8, 8], num_classes=10, num_codes=32, code_dim=8, hidden=32)
    out = m(torch.rand(3, 1, 8, 8))
    assert out["logits"].shape == (3, 1, 8, 8) and out["indices"].shape == (3, 2, 2)
    assert MODELS.build("vqvae").grid == (7, 7)
    with pytest.raises(ConfigError, match="multiples of 4"):
        MODELS.build("vqvae", in_shape=(1, 30, 30))
    for bad, word in [({"decay": 1.0}, "decay"), ({"beta": -1}, "beta"), ({"num_codes": 1}, "num_codes"),
                      ({"restart_after": -1}, "restart_after"), ({"ema": "yes"}, "ema")]:
        with pytest.raises(ConfigError, match=word):
            MODELS.build("vqvae", **bad)


# ----------------------------------------------------------------------------------------
# the method: learning, export, resume


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("vq")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(out / ".cache"))
        res = train(vq_cfg(out, "train.epochs=8"))
    return res


def test_training_beats_mean_image_and_uses_many_codes(trained):
    from profond.data import load_dataset

    s = trained.summary
    assert s["method"] == "vqvae" and s["code_grid"] == [2, 2]  # method.name auto -> vqvae
    d = load_dataset("digits")
    train_x, test_x = d.train_x.float() / 255, d.test_x.float() / 255
    baseline = ((test_x - train_x.mean(0)) ** 2).mean().item()  # ~0.073
    f = s["final"]
    assert f["test_mse"] < 0.7 * baseline, (f["test_mse"], baseline)
    assert f["test_usage"] >= 0.75 and f["test_perplexity"] > 10  # of 32 codes
    assert f["test_psnr"] > 13.0
    for k in ("train_recon", "train_vq_loss", "train_commit", "train_perplexity", "train_usage", "val_loss"):
        assert k in f


def test_export_codes_roundtrip_and_no_sampling(trained, tmp_path):
    method, _ = load_run(trained.run_dir, device="cpu")
    assert isinstance(method, VQVAEMethod) and not method.can_sample
    x, _ = method.test_images(50)
    idx = method.encode_indices(x)
    assert idx.dtype == torch.int64 and idx.shape == (50, 2, 2)
    assert torch.equal(method.decode_indices(idx), method.reconstruct(x))
    path = export_codes(method, tmp_path / "codes.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["profond"])
        saved, labels = f.get_tensor("indices"), f.get_tensor("labels")
    assert meta["num_codes"] == 32 and meta["grid"] == [2, 2] and meta["split"] == "test"
    assert meta["run"] == str(trained.run_dir)
    assert saved.dtype == torch.int64 and saved.shape == (len(method.data.test_y), 2, 2)
    assert torch.equal(saved[:50], idx) and torch.equal(labels, method.data.test_y)
    with pytest.raises(ProfondError, match="prior"):
        method.sample(4)
    with pytest.raises(ConfigError, match="split"):
        export_codes(method, tmp_path / "x.safetensors", split="val")


@pytest.mark.parametrize("ema", [True, False])
def test_resume_equals_uninterrupted_including_codebook(tmp_path, ema):
    extra = [f"model.ema={str(ema).lower()}", "model.restart_after=3"]
    ref = train(vq_cfg(tmp_path / "ref", *extra))
    steps = ref.summary["steps"] // 2
    first = train(vq_cfg(tmp_path / "res", *extra, f"train.max_steps={steps}"))
    assert first.summary["steps"] == steps
    res = train(vq_cfg(tmp_path / "res", *extra), run_dir=first.run_dir, resume=True)
    assert res.summary["steps"] == ref.summary["steps"]
    wa, wb = model_tensors(ref.run_dir), model_tensors(res.run_dir)
    assert wa.keys() == wb.keys()
    assert {"model.quantizer.embedding", "model.quantizer.unused_steps", "model.quantizer.updates"} <= wa.keys()
    if ema:
        assert {"model.quantizer.ema_count", "model.quantizer.ema_sum"} <= wa.keys()
    assert int(wa["model.quantizer.updates"]) == ref.summary["steps"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]
