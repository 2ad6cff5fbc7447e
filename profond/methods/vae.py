"""Variational autoencoder training and evaluation (course chapter 9).

The model (:func:`profond.models.ae.vae`) gives the Gaussian encoder
``q_φ(z|x) = N(μ_φ(x), diag σ²_φ(x))`` (log-variance output, eq. 9.26) and a decoder
``p_θ(x|z)`` with prior ``p(z) = N(0, I)``. This module turns them into the objective

    ELBO(x) = E_q[log p_θ(x|z)] − KL(q_φ(z|x) ‖ p(z))                        (eq. 9.8)

estimated with one reparameterised sample ``z = μ + σ ⊙ ε``, ``ε ~ N(0, I)`` (eq. 9.14), and
the closed-form KL of two diagonal Gaussians (eq. 9.18). **Units**: every loss is a sum over
the pixels (and latent dims) of one image, in nats, averaged over the batch — the per-image
numbers of the course's table 9.1 (``reduction='sum'`` in §9.8, divided by the data size).

Options (``method.args``, :class:`VAEOptions`):

* ``likelihood``: ``bernoulli`` — ``log p(x|z) = Σ_p x_p log ŷ_p + (1−x_p) log(1−ŷ_p)``,
  ``ŷ = sigmoid(logits)``: the course's BCE. On **continuous** pixels (Fashion-MNIST grey
  levels) this "likelihood" is *not* a normalised density over [0, 1]^D (the continuous
  Bernoulli of Loaiza-Ganem & Cunningham 2019 is), so its ELBO is a training loss, not a
  log-likelihood bound; use ``binarize: dynamic`` for a proper Bernoulli model of binary data.
  ``gaussian`` — ``p(x|z) = N(sigmoid(logits), σ² I)`` with one **global** σ shared by all
  pixels; ``learn_sigma: true`` (default) learns ``log σ`` (initialised at ``sigma``) jointly
  with the nets (the maximum-likelihood σ-VAE of Rybkin et al. 2021), ``false`` keeps ``sigma``
  fixed. Its NLL is exact in nats, constant included:
  ``−log p(x|z) = Σ_p [ (x_p − x̂_p)² / (2σ²) + log σ + ½ log 2π ]``. It is a *density* on
  R^D, so it can be negative; it is not comparable with the Bernoulli numbers.
* ``beta``: the β of β-VAE (eq. 9.23), ``loss = recon + β·KL``.
* ``kl_anneal_steps``: linear warm-up ``β_t = β · min(1, t / N)`` over the first N optimizer
  steps (Bowman et al. 2016). ``t`` is the loop's step counter (``ctx.step``, saved in every
  checkpoint), so a resumed run continues the warm-up exactly.
* ``free_bits``: per-dimension KL floor λ (Kingma et al. 2016, "free bits"): the KL term
  becomes ``Σ_j max(λ, mean_batch KL_j)``: a dimension whose batch-averaged KL is below λ
  nats is not pushed further towards the prior, which fights posterior collapse (§9.9.1).
* ``iwae_k``: with ``k > 1``, train on the importance-weighted bound (eq. 9.29, Burda et al.
  2016) with ``k`` samples per image instead of the ELBO (then β = 1, no free bits/annealing).
* ``binarize``: ``none`` or ``dynamic`` (each training batch is re-sampled ``x ~ Bernoulli(x)``,
  Salakhutdinov & Murray 2008; evaluation uses a seeded, hence fixed, binarization).
* ``iwae_eval_k`` / ``iwae_eval_n``: samples and images of the IWAE log-likelihood estimate
  of ``evaluate(..., detailed=True)`` (default 100 samples, all images).

:meth:`VAEMethod.evaluate` reports, per image, ``loss = −ELBO`` (β = 1, whatever the
training β), ``recon``, ``kl``, ``elbo`` and ``active_units`` (Burda et al. 2016: dimension
``j`` is active when ``Cov_x(E_q[z_j]) > 0.01``); ``detailed=True`` adds ``kl_per_dim`` and
``iwae_nll`` (−log p(x) estimated by :func:`iwae_bound`). All evaluation randomness comes
from a generator seeded with ``eval_seed``: the numbers are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base.coerce import NonNegInt, PosInt, Range, Seed
from ..config import RunConfig
from ..contract import Env, StepContext
from ..errors import ConfigError
from ..models.ae import AutoEncoder
from ..registry import METHODS
from .capabilities import Reconstructs, SamplesImages
from .generative import EncodedLatent, GenerativeMethod, batched

LOG_2PI = math.log(2 * math.pi)
#: threshold of Burda et al. (2016) for an "active" latent unit: Cov_x(E_q[z_j]) > 0.01
ACTIVE_THRESHOLD = 0.01

#: ``log_lik(decoder_output, x) -> (N,)`` per-image log-likelihood in nats
LogLik = Callable[[Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------------------
# the pieces of the ELBO (all per image, summed over dimensions)


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
    """``z = μ + σ ⊙ ε``, ``σ = exp(½ log σ²)`` (eqs. 9.14, 9.26).

    ``ε ~ N(0, I)`` is independent of φ, so ``∇_φ E_q[f(z)] = E_ε[∇_φ f(μ + σ ⊙ ε)]``
    (eq. 9.17): the gradient flows through ``μ`` and ``σ`` by ordinary backpropagation.
    """
    if eps is None:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_normal_std(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(μ, diag σ²) ‖ N(0, I))`` per dimension (eq. 9.18, summands):
    ``½ (σ_j² + μ_j² − 1 − log σ_j²)``. Sum over the last axis for the KL of a vector."""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar)


def kl_gaussians(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    """``KL(N(μ₁, Σ₁) ‖ N(μ₂, Σ₂))`` for full covariances (exercise 9.1, eq. 9.28)::

        ½ [ log |Σ₂|/|Σ₁| − d + Tr(Σ₂⁻¹ Σ₁) + (μ₂ − μ₁)ᵀ Σ₂⁻¹ (μ₂ − μ₁) ]

    With ``μ₂ = 0, Σ₂ = I`` and a diagonal ``Σ₁`` it is eq. 9.18. Batched over leading axes.
    """
    d = mu1.shape[-1]
    l2 = torch.linalg.cholesky(cov2)
    logdet1 = torch.linalg.slogdet(cov1)[1]
    logdet2 = 2 * torch.log(torch.diagonal(l2, dim1=-2, dim2=-1)).sum(-1)
    trace = torch.diagonal(torch.cholesky_solve(cov1, l2), dim1=-2, dim2=-1).sum(-1)
    diff = (mu2 - mu1).unsqueeze(-1)
    maha = (diff * torch.cholesky_solve(diff, l2)).sum((-2, -1))
    return 0.5 * (logdet2 - logdet1 - d + trace + maha)


def log_normal_std(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` summed over the last axis."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def log_normal_diag(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """``log N(z; μ, diag σ²)`` summed over the last axis."""
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def bernoulli_log_lik(logits: Tensor, x: Tensor) -> Tensor:
    """``Σ_p log Bernoulli(x_p; sigmoid(logit_p))`` per image = −BCE summed (§9.8),
    computed from logits (stable; the course's ``BCE(sigmoid(·))`` saturates)."""
    return -F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none").flatten(1).sum(1)


def gaussian_log_lik(mean: Tensor, x: Tensor, log_sigma: Tensor | float) -> Tensor:
    """``Σ_p log N(x_p; mean_p, σ²)`` per image, in nats (constant ``−½ log 2π`` included)."""
    log_sigma = torch.as_tensor(log_sigma, dtype=torch.float32, device=x.device)
    r = (x - mean.float()) * torch.exp(-log_sigma)
    return -(0.5 * r.pow(2) + log_sigma + 0.5 * LOG_2PI).flatten(1).sum(1)


def log_weights(x: Tensor, out: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor,
                log_lik: LogLik) -> Tensor:
    """``log w = log p(x|z) + log p(z) − log q(z|x)`` for ``z = μ + σ ⊙ ε``, shape ``(k, N)``.

    ``eps`` is ``(k, N, d)``, ``out`` the decoder output for the ``k·N`` codes (sample-major).
    ``log q(z|x) = log N(ε; 0, I) − ½ Σ log σ²`` is computed from ``ε`` (exact and stable).
    """
    k, n, _ = eps.shape
    z = mu + torch.exp(0.5 * logvar) * eps
    xr = x.unsqueeze(0).expand(k, *x.shape).reshape(k * n, *x.shape[1:])
    ll = log_lik(out, xr).view(k, n)
    log_q = log_normal_std(eps) - 0.5 * logvar.sum(-1)
    return ll + log_normal_std(z) - log_q


def iwae_bound(model: nn.Module, x: Tensor, k: int, log_lik: LogLik = bernoulli_log_lik, *,
               seed: int | None = 0, generator: torch.Generator | None = None,
               max_batch: int = 8192) -> Tensor:
    """The IWAE bound (eq. 9.29) per image, in nats: an estimate of ``log p(x)``::

        L_k(x) = log (1/k) Σ_{i=1..k} p(x, z_i) / q(z_i|x),   z_i ~ q(z|x)

    ``L_1`` is the (single-sample) ELBO, ``L_k ≤ L_{k+1} ≤ log p(x)`` in expectation and
    ``L_k → log p(x)`` as ``k → ∞`` (Burda et al. 2016). ``model`` needs ``encode(x) ->
    (μ, log σ²)`` and ``decode(z)``; ``log_lik(decode(z), x)`` gives ``log p(x|z)``.

    Memory is bounded by decoding the ``k`` samples in chunks of ``max(1, max_batch // N)``
    and combining the chunks with a running ``logsumexp``. Randomness: ``generator`` if
    given, else a fresh one seeded with ``seed`` (deterministic for a given chunking), or the
    global RNG with ``seed=None`` (training). Differentiable unless called under no_grad.
    """
    if k < 1:
        raise ConfigError(f"iwae k={k} must be >= 1.")
    mu, logvar = model.encode(x)
    if mu.dtype in (torch.float16, torch.bfloat16):  # autocast: weights in fp32
        mu, logvar = mu.float(), logvar.float()
    n, d = mu.shape
    if generator is None and seed is not None:
        generator = torch.Generator(device=mu.device).manual_seed(int(seed))
    chunk = max(1, min(k, max_batch // max(n, 1)))
    total: Tensor | None = None
    for start in range(0, k, chunk):
        m = min(chunk, k - start)
        eps = torch.randn((m, n, d), generator=generator, device=mu.device, dtype=mu.dtype)
        out = model.decode((mu + torch.exp(0.5 * logvar) * eps).reshape(m * n, d))
        lse = torch.logsumexp(log_weights(x, out, mu, logvar, eps, log_lik), dim=0)
        total = lse if total is None else torch.logaddexp(total, lse)
    assert total is not None
    return total - math.log(k)


# ----------------------------------------------------------------------------------------
# the method


@dataclass
class VAEOptions:
    #: bernoulli (BCE, §9.8) | gaussian (global σ, see learn_sigma)
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    #: gaussian likelihood: the fixed σ, or the initial σ when learn_sigma
    sigma: Annotated[float, Range(0, lo_open=True), "a standard deviation"] = 0.1
    #: gaussian likelihood: learn one global log σ with the nets
    learn_sigma: bool = True
    #: weight of the KL term (β-VAE, eq. 9.23); 1 = the ELBO
    beta: Annotated[float, Range(0), "the KL weight of eq. 9.23, 1: the ELBO"] = 1.0
    #: linear warm-up of β from 0 over this many optimizer steps (0 = none)
    kl_anneal_steps: Annotated[NonNegInt, "0: no warm-up"] = 0
    #: per-dimension KL floor λ in nats (free bits, Kingma et al. 2016; 0 = none)
    free_bits: Annotated[float, Range(0), "nats, 0: off"] = 0.0
    #: samples of the IWAE training bound (eq. 9.29); 1 = the ELBO
    iwae_k: Annotated[PosInt, "1: the plain ELBO"] = 1
    #: none | dynamic (x ~ Bernoulli(x) for each batch)
    binarize: Literal["none", "dynamic"] = "none"
    #: samples of the IWAE log-likelihood estimate in evaluate(detailed=True)
    iwae_eval_k: Annotated[PosInt, "1: the plain ELBO"] = 100
    #: images of that estimate (the first n; None = all)
    iwae_eval_n: Annotated[int, Range(1), "null: all the images"] | None = 2000
    #: seed of all evaluation randomness (ε, binarization)
    eval_seed: Seed = 0


class GlobalSigma(nn.Module):
    """One learned ``log σ`` shared by every pixel of the Gaussian decoder.

    Its ``forward`` is the log-likelihood, so that a DDP wrapper sees the parameter used."""

    def __init__(self, sigma: float):
        super().__init__()
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))

    def forward(self, mean: Tensor, x: Tensor) -> Tensor:
        return gaussian_log_lik(mean, x, self.log_sigma)


@METHODS.register("vae", help="VAE: ELBO / β-VAE / KL annealing / free bits / IWAE (ch. 9)")
class VAEMethod(GenerativeMethod, SamplesImages, Reconstructs, EncodedLatent):
    Options = VAEOptions
    has_latent = True

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env, with_data=with_data)
        self.check_options(self.opts)
        model = self.build_model()
        if isinstance(model, AutoEncoder) or not (hasattr(model, "encode") and hasattr(model, "decode")
                                                  and hasattr(model, "latent_dim")):
            raise ConfigError(f"method 'vae' needs a model whose encoder gives (mu, logvar); "
                              f"model {cfg.model.name!r} does not: use model.name=vae "
                              "(or method.name=autoencoder for an autoencoder).")
        self.latent_dim = int(model.latent_dim)
        self.nets = {"model": model}
        o = self.opts
        if o.likelihood == "gaussian" and o.learn_sigma:
            self.nets["likelihood"] = GlobalSigma(o.sigma)

    @staticmethod
    def check_options(o: VAEOptions) -> None:
        """What the annotations of :class:`VAEOptions` (types, choices, ranges) cannot say."""
        if o.binarize != "none" and o.likelihood != "bernoulli":
            raise ConfigError("method.binarize is for the bernoulli likelihood (binary pixels); "
                              "with likelihood=gaussian set binarize=none.")
        if o.iwae_k > 1 and (o.beta != 1 or o.free_bits or o.kl_anneal_steps):
            raise ConfigError("method.iwae_k > 1 trains the IWAE bound (eq. 9.29), which has no β, free "
                              "bits or KL annealing: set beta=1, free_bits=0, kl_anneal_steps=0.")

    # -- pieces ------------------------------------------------------------------------------
    def optimizer_params(self) -> dict[str, Any]:
        groups = super().optimizer_params()
        if "likelihood" in self.raw_nets:  # the learned log σ, without weight decay
            groups["model"] = list(groups["model"]) + [
                {"params": [self.raw_nets["likelihood"].log_sigma], "lr": self.cfg.optim.lr,
                 "weight_decay": 0.0, "name": "log_sigma"}]
        return groups


    def log_sigma(self) -> Tensor:
        lik = self.raw_nets.get("likelihood", self.nets.get("likelihood"))
        if lik is not None:
            return lik.log_sigma
        return torch.tensor(math.log(self.opts.sigma), device=self.env.device)

    def log_lik(self, out: Tensor, x: Tensor) -> Tensor:
        """``log p(x|z)`` per image (nats) from the decoder output ``out`` (logits)."""
        if self.opts.likelihood == "bernoulli":
            return bernoulli_log_lik(out, x)
        mean = torch.sigmoid(out.float())
        if "likelihood" in self.nets:  # learned σ: through the (possibly DDP-wrapped) net
            return self.nets["likelihood"](mean, x)
        return gaussian_log_lik(mean, x, math.log(self.opts.sigma))

    def binarize(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``x ~ Bernoulli(x)`` when ``binarize: dynamic`` (global RNG unless ``generator``)."""
        if self.opts.binarize == "dynamic":
            return torch.bernoulli(x, generator=generator)
        return x

    def beta_at(self, step: int) -> float:
        """``β_t = β · min(1, t / kl_anneal_steps)`` (linear KL warm-up), ``t`` = optimizer steps done."""
        o = self.opts
        if o.kl_anneal_steps <= 0:
            return o.beta
        return o.beta * min(1.0, step / o.kl_anneal_steps)

    # -- training ---------------------------------------------------------------------------
    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        o = self.opts
        x = self.binarize(batch[0])
        net = self.nets["model"]  # the (possibly DDP / compiled) wrapper: call its forward
        n, d = x.shape[0], self.latent_dim
        if o.iwae_k > 1:
            eps = torch.randn((o.iwae_k, n, d), device=x.device)
            out, mu, logvar, _ = net(x, eps)
            bound = torch.logsumexp(log_weights(x, out, mu.float(), logvar.float(), eps, self.log_lik), 0)
            bound = bound - math.log(o.iwae_k)
            loss = -bound.mean()
            ctx.optimize(loss)
            return {"loss": loss.detach(), "iwae": bound.mean().detach()}
        out, mu, logvar, _ = net(x, torch.randn((n, d), device=x.device))
        recon = -self.log_lik(out, x)                          # (N,) nats
        kl_dim = kl_normal_std(mu.float(), logvar.float())     # (N, d), eq. 9.18
        kl = kl_dim.sum(1)
        beta = self.beta_at(ctx.step)
        if o.free_bits > 0:  # Σ_j max(λ, E_batch KL_j)
            kl_term = torch.clamp(kl_dim.mean(0), min=o.free_bits).sum()
        else:
            kl_term = kl.mean()
        loss = recon.mean() + beta * kl_term                   # −ELBO for β = 1 (eq. 9.23)
        ctx.optimize(loss)
        out_metrics = {"loss": loss.detach(), "recon": recon.mean().detach(), "kl": kl.mean().detach(),
                       "elbo": -(recon + kl).mean().detach(), "beta": beta}
        if "likelihood" in self.nets:
            out_metrics["sigma"] = float(self.log_sigma().detach().exp())
        return out_metrics

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        o, model = self.opts, self.unwrapped()
        g = self.generator(o.eval_seed)  # ε and binarization of the ELBO
        g_iwae = self.generator(o.eval_seed + 1)  # separate: detailed=True leaves the ELBO unchanged
        recon_sum = kl_sum = 0.0
        kl_dim_sum = torch.zeros(self.latent_dim, dtype=torch.float64, device=self.env.device)
        mus: list[Tensor] = []
        iwae_sum, iwae_n = 0.0, 0
        n = 0
        for x, _ in batches.batches(0):
            x = self.binarize(x, generator=g)
            with ctx.autocast():
                mu, logvar = model.encode(x)
                mu, logvar = mu.float(), logvar.float()
                z = reparameterize(mu, logvar, generator=g)
                out = model.decode(z)
            recon_sum += -self.log_lik(out, x).sum().item()
            kl_dim = kl_normal_std(mu, logvar)
            kl_sum += kl_dim.sum().item()
            kl_dim_sum += kl_dim.sum(0).double()
            mus.append(mu.double())
            n += len(x)
            if detailed and (o.iwae_eval_n is None or iwae_n < o.iwae_eval_n):
                xi = x if o.iwae_eval_n is None else x[: o.iwae_eval_n - iwae_n]
                with ctx.autocast():
                    b = iwae_bound(model, xi, o.iwae_eval_k, self.log_lik, generator=g_iwae)
                iwae_sum += b.double().sum().item()
                iwae_n += len(xi)
        n = max(n, 1)
        au = torch.cat(mus).var(0, unbiased=False) if mus else torch.zeros(self.latent_dim)
        res: dict[str, Any] = {
            "loss": (recon_sum + kl_sum) / n,
            "recon": recon_sum / n,
            "kl": kl_sum / n,
            "elbo": -(recon_sum + kl_sum) / n,
            "active_units": int((au > ACTIVE_THRESHOLD).sum()),
        }
        if o.likelihood == "gaussian":
            res["sigma"] = float(self.log_sigma().detach().exp())
        if detailed:
            res["kl_per_dim"] = [round(v, 6) for v in (kl_dim_sum / n).tolist()]
            res["posterior_mean_var"] = [round(v, 6) for v in au.tolist()]
            res["iwae_nll"] = -iwae_sum / max(iwae_n, 1)
            res["iwae_eval_k"] = o.iwae_eval_k
            res["iwae_images"] = iwae_n
            res["examples"] = n
        return res

    def describe(self) -> dict[str, Any]:
        o = self.opts
        return {**super().describe(), "likelihood": o.likelihood, "beta": o.beta, "binarize": o.binarize}

    # -- generative hooks ----------------------------------------------------------------------

    def mean_image(self, out: Tensor) -> Tensor:
        """The decoder's mean ``E[x|z] = sigmoid(logits)`` in [0, 1] (both likelihoods)."""
        return torch.sigmoid(out.float())

    @torch.no_grad()
    def sample(self, n: int, *, seed: int = 0, labels: Tensor | None = None) -> Tensor:
        """``n`` images ``E[x|z]``, ``z ~ p(z) = N(0, I)`` drawn from a ``seed``-ed generator.

        Returns the decoder's **means** (Bernoulli probabilities / Gaussian means), not draws
        ``x ~ p(x|z)``: pixel-wise Bernoulli or Gaussian noise adds nothing but salt-and-pepper
        / grain, as is customary for VAE samples (course §9.8 shows ``sigmoid`` outputs too).
        """
        z = torch.randn((n, self.latent_dim), generator=self.generator(seed), device=self.env.device)
        with self.eval_mode() as model:
            return batched(lambda zz: self.mean_image(model.decode(zz)), z).cpu()

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Posterior means ``μ_φ(x)`` of [0, 1] images (given as they are, never binarized)."""
        with self.eval_mode() as model:
            return batched(lambda xx: model.encode(xx)[0].float(), self.to_device(x)).cpu()

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        with self.eval_mode() as model:
            return batched(lambda zz: self.mean_image(model.decode(zz)), self.to_device(z)).cpu()

    @torch.no_grad()
    def iwae(self, x: Tensor, k: int | None = None, seed: int = 0) -> Tensor:
        """IWAE estimate of ``log p(x)`` per image (nats) for [0, 1] images, CPU output."""
        k = k or self.opts.iwae_eval_k
        g = self.generator(seed)
        with self.eval_mode() as model:
            return batched(lambda xx: iwae_bound(model, self.binarize(xx, g), k, self.log_lik, generator=g),
                           self.to_device(x), batch_size=500).cpu()
