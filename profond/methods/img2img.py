"""Image-to-image translation with GANs: Pix2Pix (paired), SRGAN-style super-resolution and
CycleGAN (unpaired, :class:`CycleGANMethod`: two class domains, e.g. sneakers <-> ankle boots).

Course: course seed 004 (sections "Pix2Pix: Transformation d'Image Supervisée",
"Architecture du Générateur (U-Net)", "Super-Résolution avec GANs: SRGAN et ESRGAN") and
course ch. 8 (§8.2–8.4, the adversarial losses, shared with
:mod:`profond.methods.gan_losses`).

Tasks are built offline from the dataset's images (no paired data needed on disk): for a
target ``x`` in [0, 1] the **input** is :meth:`make_inputs(x)`, a deterministic function:

* ``pix2pix`` ``task=edges``: ``clamp(2 · |Sobel(x)|, 0, 1)`` (kornia's normalised Sobel
  gradient magnitude; a blank image has no edges) -> the garment;
* ``pix2pix`` ``task=inpaint``: ``x`` with a centred ``mask_size``² square set to 0 -> ``x``
  (the output keeps the known pixels: ``where(mask, G(a), a)``, :meth:`Pix2PixMethod.compose`);
* ``srgan``: ``avg_pool2d(x, 2)`` (14×14) -> ``x`` (28×28).

Pix2Pix (Isola et al. 2017), conditional GAN with a U-Net ``G`` and PatchGAN ``D(input, image)``::

    L_D = d_loss(D(a, x), D(a, G(a)))                  (method.loss, gan_losses)
    L_G = adv_weight · g_loss(D(a, G(a))) + l1_weight · |G(a) − x|₁     (λ = 100 as in the paper)

SRGAN (Ledig et al. 2017): unconditional PatchGAN on the HR image and
``L_G = pixel_weight·|G(a) − x|₁ + feature_weight·‖φ(G(a)) − φ(x)‖² + adv_weight·g_loss``
with ``φ`` the 128-d features of the shipped Fashion-MNIST net
(:func:`profond.metrics.generative.load_feature_net`, frozen; the "content loss" on a
classifier's features, VGG in the paper). The course gives no weights; 1e-3 for the
adversarial term is the paper's.

Both are evaluated (:meth:`Img2ImgMethod.evaluate`) by L1 and PSNR of ``G(a)`` vs ``x``
(SR: also SSIM, kornia, 7×7 Gaussian window) next to a **naive baseline** computed on the
same images: ``pix2pix`` predicts the training-mean image (``edges``) or fills the masked
square with it (``inpaint``); ``srgan``'s baseline is bicubic upsampling. ``*_gain`` = model
PSNR − baseline PSNR, > 0 when the model beats it. ``loss`` (monitored) is the L1.

Interface for ``profond sample RUN --input``: :meth:`make_inputs` (targets -> task inputs) and
:meth:`translate` (inputs -> outputs), [0, 1] CPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base.coerce import NonNegInt, PosInt, Range
from ..config import RunConfig
from ..contract import Env, StepContext
from ..data.inputs import MAX_EXAMPLES, parse_input, read_image
from ..errors import ConfigError, ProfondError
from ..registry import METHODS, MODELS
from ..viz.images import save_image_table
from .autoencoder import psnr
from .capabilities import Artifacts, Table, TranslatesImages, TranslationRequest
from .gan_losses import GANLoss, d_loss, g_loss
from .generative import GenerativeMethod, batched


def sobel_edges(x01: Tensor) -> Tensor:
    """Edge map in [0, 1]: ``clamp(2 · |∇x|, 0, 1)`` with kornia's normalised Sobel gradients
    (replicate padding: a constant image gives exactly 0; ``kornia.filters.sobel`` itself adds
    an ε under its square root, hence ``spatial_gradient`` + ``hypot``)."""
    from kornia.filters import spatial_gradient

    g = spatial_gradient(x01.float(), mode="sobel", order=1, normalized=True)
    return (2.0 * torch.hypot(g[:, :, 0], g[:, :, 1])).clamp(0.0, 1.0)


def center_mask(shape: tuple[int, ...], size: int, device: Any = None) -> Tensor:
    """Bool ``(1, 1, H, W)`` mask, True on the centred ``size × size`` square: rows and columns
    ``(H − size) // 2 ... + size − 1``."""
    h, w = shape[-2], shape[-1]
    m = torch.zeros(1, 1, h, w, dtype=torch.bool, device=device)
    t, left = (h - size) // 2, (w - size) // 2
    m[..., t: t + size, left: left + size] = True
    return m


def ssim(a: Tensor, b: Tensor, window: int = 7) -> Tensor:
    """Per-image SSIM (kornia, Gaussian window, data range 1) of [0, 1] images."""
    from kornia.metrics import ssim as kssim

    return kssim(a.float().clamp(0, 1), b.float().clamp(0, 1), window, max_val=1.0).flatten(1).mean(1)


#: a loss weight: ``0`` turns the term off
Weight = Annotated[float, Range(0), "a loss weight, 0: off"]
#: test metrics on the first n test images only
TestN = Annotated[int, Range(1), "null: all the test images"] | None
#: the PatchGAN's stride-2 layers (each halves the image; see :func:`check_d_layers`)
DLayers = Annotated[int, Range(1), "each layer halves the image"]


@dataclass
class Pix2PixOptions:
    #: edges | inpaint
    task: Literal["edges", "inpaint"] = "edges"
    #: adversarial loss (gan_losses.LOSSES)
    loss: GANLoss = "non-saturating"
    #: λ of the L1 term (Isola et al.: 100)
    l1_weight: Weight = 100.0
    #: weight of the generator's adversarial term (0 = plain L1 regression)
    adv_weight: Weight = 1.0
    #: inpaint: side of the centred masked square (None = round(3H/7): 12 on 28×28, 3 on 8×8),
    #: at most the image's side
    mask_size: Annotated[int, Range(1), "null: round(3H/7)"] | None = None
    #: test metrics on the first n test images only (None = all; a CPU time saver)
    test_n: TestN = None
    #: PatchGAN width and number of stride-2 layers
    d_base: PosInt = 32
    d_layers: DLayers = 2


@dataclass
class SROptions:
    #: adversarial loss (gan_losses.LOSSES)
    loss: GANLoss = "non-saturating"
    #: L1 pixel loss weight
    pixel_weight: Weight = 1.0
    #: MSE on the fmnist feature net's 128-d features (0 = off: no feature net loaded)
    feature_weight: Weight = 0.01
    #: adversarial weight (SRGAN: 1e-3)
    adv_weight: Weight = 1e-3
    #: downsampling factor (avg pooling); the image's height and width are multiples of it
    scale: Annotated[int, Range(2, 8), "the downsampling factor, e.g. 2"] = 2
    #: test metrics on the first n test images only (None = all; a CPU time saver)
    test_n: TestN = None
    #: PatchGAN width and number of stride-2 layers
    d_base: PosInt = 32
    d_layers: DLayers = 2


def check_d_layers(d_layers: int, image_shape: tuple[int, ...]) -> None:
    """A PatchGAN of ``d_layers`` 4×4 stride-2 convolutions (padding 1) halves the image at each
    one (``H -> H // 2``), so it needs ``2 ** d_layers <= min(H, W)`` to keep one logit."""
    side = min(int(s) for s in image_shape[-2:])
    if 2**d_layers > side:
        raise ConfigError(f"bad value for 'method.d_layers': {d_layers}; each PatchGAN layer halves the "
                          f"image, so {side}x{side} images allow at most {side.bit_length() - 1}.")


# -- presentation: `profond sample RUN --input ...` ---------------------------------------------
#: test images translated by `profond sample` on an image-to-image run without --input
DEFAULT_TRANSLATE = 8


def psnr_table(title: str, header: list[str], rows: list[tuple[str, list[float]]]) -> Table:
    """One row per example (values in dB, 2 decimals) and a mean row when there are several."""
    out = [[name, *(f"{v:.2f}" for v in vals)] for name, vals in rows]
    if len(rows) > 1:
        out.append(["mean", *(f"{sum(r[1][j] for r in rows) / len(rows):.2f}" for j in range(len(header) - 1))])
    return Table(title, header, out)


def pick_inputs(method: GenerativeMethod, source: Tensor, req: TranslationRequest, *,
                domain: str = "") -> tuple[Tensor, Tensor | None, list[str], list[str]]:
    """``(inputs, targets, row names, notes)`` of a translation request: ``--input`` indices of
    ``source`` (targets: those images; the inputs are built from them), an image file (the
    target, or with ``--as-input`` the input itself: no target) or, without ``--input``, the
    first few images of ``source``."""
    notes = []
    if req.spec is None:
        k = min(req.n or DEFAULT_TRANSLATE, len(source), MAX_EXAMPLES)
        which = f"domain {domain} " if domain else ""
        notes.append(f"note: no --input: translating {which}test images 0:{k} (pass --input INDEX, 0,5,9, 0:8 or "
                     "an image file).")
        picked: list[int] | Path = list(range(k))
    else:
        picked = parse_input(req.spec, len(source))
    if isinstance(picked, Path):
        shape = tuple(method.image_shape)
        targets: Tensor | None
        if req.as_input:  # the file is the model input: read it at the input's size (e.g. 14x14 for x2 SR)
            targets = None
            inputs = read_image(picked, tuple(method.make_inputs(torch.zeros(1, *shape)).shape[1:]), req.invert)
        else:
            targets = read_image(picked, shape, req.invert)
            inputs = method.make_inputs(targets).cpu()
        return inputs, targets, [picked.name if len(picked.name) <= 18 else picked.name[:15] + "..."], notes
    if req.as_input:
        raise ProfondError("--as-input applies to an image file (an edge map, a low-res image); "
                           "a test index is always a target image: drop --as-input.")
    targets = source[picked]
    return method.make_inputs(targets).cpu(), targets, [f"{domain or 'test'} #{i}" for i in picked], notes


class Img2ImgMethod(GenerativeMethod, TranslatesImages):
    """Shared machinery: nets ``G`` and ``D``, optimizers ``"G"`` and ``"D"``, evaluation
    against a naive baseline, :meth:`translate` / :meth:`make_inputs`."""

    has_latent = False
    #: the naive baseline's name in figures and tables
    baseline_name = "baseline"
    ema_nets = ("G",)
    monitor = ("val_loss", "min")
    #: generator model names accepted in cfg.model.name
    generators: tuple[str, ...] = ()

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env, with_data=with_data)
        self.check_options(self.opts)
        if cfg.model.name not in self.generators:
            raise ConfigError(f"method {cfg.method.name!r} needs model.name in {list(self.generators)}, "
                              f"got {cfg.model.name!r}.")
        self.nets = {"G": self.build_model(), "D": self.build_discriminator()}

    def check_options(self, o: Any) -> None:
        """What the annotations of the options (types, choices, ranges) cannot say."""
        check_d_layers(o.d_layers, self.image_shape)

    def build_discriminator(self) -> nn.Module:
        raise NotImplementedError

    def optimizer_params(self) -> dict[str, Any]:
        return {name: [p for p in self.raw_nets[name].parameters() if p.requires_grad] for name in ("G", "D")}

    # -- task -----------------------------------------------------------------------------
    def make_inputs(self, x01: Tensor) -> Tensor:
        raise NotImplementedError

    def baseline(self, inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def compose(self, a: Tensor, out: Tensor) -> Tensor:
        """The task's output from the generator's raw output (identity but for inpainting)."""
        return out

    def d_inputs(self, a: Tensor, img: Tensor) -> tuple[Tensor, ...]:
        """What D sees for input ``a`` and image ``img``."""
        return (a, img)

    def content_loss(self, fake: Tensor, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    # -- training -------------------------------------------------------------------------
    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        x, _ = batch
        o = self.opts
        G, D = self.nets["G"], self.nets["D"]
        with torch.no_grad():
            a = self.make_inputs(x)
        with ctx.autocast():
            fake = self.compose(a, G(a))
            ld = d_loss(o.loss, D(*self.d_inputs(a, x)), D(*self.d_inputs(a, fake.detach())))
        ctx.optimize(ld, "D")
        with ctx.autocast():
            content, parts = self.content_loss(fake.float(), x)
            adv = g_loss(o.loss, D(*self.d_inputs(a, fake))) if o.adv_weight > 0 else content.new_zeros(())
            lg = content + o.adv_weight * adv
        ctx.optimize(lg, "G")
        return {"loss_d": ld.detach(), "loss_g": lg.detach(), "adv": adv.detach(),
                **{k: v.detach() for k, v in parts.items()}}

    # -- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        """Mean L1 / PSNR (and SSIM for SR) of G's outputs and of the naive baseline against
        the targets (``detailed`` is accepted for ``profond eval``; the metrics are the same)."""
        sums: dict[str, float] = {}
        n = 0
        with self.eval_mode("G") as G:
            for x, _ in batches.batches(0):
                a = self.make_inputs(x)
                with ctx.autocast():
                    out = self.compose(a, G(a))
                out = out.float().clamp(0, 1)
                base = self.baseline(a).clamp(0, 1)
                for k, v in self.scores(out, base, x).items():
                    sums[k] = sums.get(k, 0.0) + float(v.double().sum())
                n += len(x)
        res = {k: v / max(n, 1) for k, v in sums.items()}
        res["loss"] = res["l1"]
        res["psnr_gain"] = res["psnr"] - res["baseline_psnr"]
        return res

    def test_data(self) -> Any:
        d, n = self.data, self.opts.test_n
        return self.eval_batches(d.test_x, d.test_y) if n is None else self.eval_batches(d.test_x[:n], d.test_y[:n])

    def scores(self, out: Tensor, base: Tensor, x: Tensor) -> dict[str, Tensor]:
        """Per-image metrics (summed then averaged by :meth:`evaluate`)."""
        return {"l1": (out - x).abs().flatten(1).mean(1), "psnr": psnr(out, x),
                "baseline_l1": (base - x).abs().flatten(1).mean(1), "baseline_psnr": psnr(base, x)}

    # -- interface ------------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, inputs: Tensor) -> Tensor:
        """Outputs ``G(inputs)`` in [0, 1] on the CPU for task inputs in [0, 1]."""
        with self.eval_mode("G") as G:
            return batched(lambda a: self.compose(a, G(a)).float().clamp(0, 1), self.to_device(inputs), 500).cpu()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "can_translate": True}

    def input_name(self, inputs: Tensor) -> str:
        """Column title of the model inputs in translation.png."""
        h, w = inputs.shape[-2:]
        return f"input {h}×{w}" if tuple(inputs.shape[-2:]) != tuple(self.image_shape[1:]) else "input"

    def task_name(self) -> str:
        return self.cfg.method.name

    def translation_figures(self, req: TranslationRequest) -> Artifacts:
        """translation.png, one row per example: input | naive baseline | output | target with
        the PSNR under each prediction, and the table of the per-example PSNR of the output and
        of the baseline against the target."""
        if req.direction != "ab":
            raise ProfondError("--direction is for CycleGAN runs (two domains); drop it for pix2pix / srgan.")
        x, _ = self.test_images()
        inputs, targets, names, notes = pick_inputs(self, x, req)
        output = self.translate(inputs)
        base = self.baseline(self.to_device(inputs)).float().clamp(0, 1).cpu()
        p_out = psnr(output, targets).tolist() if targets is not None else None
        p_base = psnr(base, targets).tolist() if targets is not None else None
        columns, titles = [inputs, base, output], [self.input_name(inputs), self.baseline_name, "output"]
        cell_notes: list[list[str] | None] = [None, None, None]
        if p_out is not None:
            cell_notes = [None, [f"{v:.1f} dB" for v in p_base], [f"{v:.1f} dB" for v in p_out], None]
            columns.append(targets)
            titles.append("target")
        title = (f"{req.run_name}: {self.task_name()}"
                 + ("" if targets is not None else " (the file is the model input)"))
        path = save_image_table(columns, req.folder / "translation.png", titles, row_labels=names,
                                notes=cell_notes if p_out is not None else None, title=title)
        art = Artifacts(files=[path], notes=notes)
        if p_out is None:
            art.notes.append("note: --as-input: no target, so no PSNR.")
            return art
        header = ["example", "output PSNR (dB)", f"{self.baseline_name} PSNR (dB)", "gain (dB)"]
        rows = [(nm, [p_out[i], p_base[i], p_out[i] - p_base[i]]) for i, nm in enumerate(names)]
        art.tables.append(psnr_table("PSNR vs the target (dB)", header, rows))
        return art


@METHODS.register("pix2pix", help="Pix2Pix: U-Net + PatchGAN, L1 + adversarial, edges / inpaint tasks")
class Pix2PixMethod(Img2ImgMethod):
    Options = Pix2PixOptions
    generators = ("unet",)

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env, with_data=with_data)
        c, h, _ = self.image_shape
        o = self.opts
        self.mask_size = o.mask_size if o.mask_size is not None else max(1, round(3 * h / 7))
        if not 1 <= self.mask_size <= min(self.image_shape[1:]):
            raise ConfigError(f"bad value for 'method.mask_size': {o.mask_size}; must be in 1..{h}.")
        #: training-set mean image (all training images, [0, 1]): the naive baseline
        self.mean_image = (self.data.train_x.float().mean(0, keepdim=True) / 255.0).to(env.device)

    def build_discriminator(self) -> nn.Module:
        o = self.opts
        return MODELS.build("patchgan", in_channels=2 * self.image_shape[0], base=o.d_base, n_layers=o.d_layers)

    def mask(self, x: Tensor) -> Tensor:
        return center_mask(x.shape, self.mask_size, x.device)

    def make_inputs(self, x01: Tensor) -> Tensor:
        x01 = x01.float()
        if self.opts.task == "edges":
            return sobel_edges(x01)
        return x01.masked_fill(self.mask(x01), 0.0)

    def compose(self, a: Tensor, out: Tensor) -> Tensor:
        """Inpainting keeps the known pixels: ``where(mask, G(a), a)`` (only the hole is
        generated, so the L1 and the adversarial loss concern the hole and its seams)."""
        if self.opts.task == "inpaint":
            return torch.where(self.mask(a), out, a.to(out.dtype))
        return out

    def baseline(self, inputs: Tensor) -> Tensor:
        mean = self.mean_image.to(inputs.device).expand_as(inputs)
        if self.opts.task == "edges":
            return mean.clone()
        return torch.where(self.mask(inputs), mean, inputs)

    def content_loss(self, fake: Tensor, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        l1 = (fake - x).abs().mean()
        return self.opts.l1_weight * l1, {"l1": l1}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "task": self.opts.task,
                "mask_size": self.mask_size if self.opts.task == "inpaint" else None}

    @property
    def baseline_name(self) -> str:  # type: ignore[override]
        return "mean image" if self.opts.task == "edges" else "mean fill"

    def input_name(self, inputs: Tensor) -> str:
        return "input (edges)" if self.opts.task == "edges" else "input (masked)"

    def task_name(self) -> str:
        return f"{self.cfg.method.name} {self.opts.task}"


@METHODS.register("srgan", help="SRGAN-style x2 super-resolution: pixel + feature + adversarial losses")
class SRGANMethod(Img2ImgMethod):
    Options = SROptions
    generators = ("srnet",)
    baseline_name = "bicubic"

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env, with_data=with_data)
        self._feat: nn.Module | None = None

    def check_options(self, o: SROptions) -> None:
        super().check_options(o)
        if int(self.cfg.model.args.get("scale", 2)) != o.scale:
            raise ConfigError("model.scale and method.scale differ: set both to the same factor.")

    def build_discriminator(self) -> nn.Module:
        o = self.opts
        return MODELS.build("patchgan", in_channels=self.image_shape[0], base=o.d_base, n_layers=o.d_layers)

    def d_inputs(self, a: Tensor, img: Tensor) -> tuple[Tensor, ...]:
        return (img,)  # SRGAN's D is unconditional: is this a real HR image?

    def make_inputs(self, x01: Tensor) -> Tensor:
        return F.avg_pool2d(x01.float(), self.opts.scale)

    def baseline(self, inputs: Tensor) -> Tensor:
        return F.interpolate(inputs, scale_factor=self.opts.scale, mode="bicubic", align_corners=False)

    def feature_net(self) -> nn.Module:
        if self._feat is None:
            from ..metrics.generative import load_feature_net

            self._feat = load_feature_net("fmnist", device=self.env.device)
            for p in self._feat.parameters():
                p.requires_grad_(False)
        return self._feat

    def content_loss(self, fake: Tensor, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        o = self.opts
        pix = (fake - x).abs().mean()
        parts = {"l1": pix}
        loss = o.pixel_weight * pix
        if o.feature_weight > 0:
            net = self.feature_net()
            with torch.no_grad():
                ft = net(x)[0]
            feat = F.mse_loss(net(fake)[0], ft)
            parts["feature"] = feat
            loss = loss + o.feature_weight * feat
        return loss, parts

    def scores(self, out: Tensor, base: Tensor, x: Tensor) -> dict[str, Tensor]:
        return {**super().scores(out, base, x), "ssim": ssim(out, x), "baseline_ssim": ssim(base, x)}


# ----------------------------------------------------------------------------------------
# CycleGAN (unpaired)


class ImagePool:
    """History of generated images (Shrivastava et al. 2017; Zhu et al. 2017 §4 "Training
    details": a buffer of the 50 last fakes). :meth:`query` takes a batch of fresh fakes and
    returns, image by image: while the pool is not full, the fresh image (stored); then with
    probability 1/2 a **past** fake drawn uniformly from the pool (and replaced there by the
    fresh one), else the fresh image itself. The discriminator thus keeps seeing older
    generator outputs, which damps the G/D oscillation. ``size=0``: no pool (identity).
    Draws use torch's global RNG (seeded and checkpointed by the loop); the content travels
    in checkpoints through :meth:`state_dict` so a resumed run continues exactly."""

    def __init__(self, size: int):
        self.size = int(size)
        self.images: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def query(self, fakes: Tensor) -> Tensor:
        fakes = fakes.detach()
        if self.size <= 0:
            return fakes
        out = []
        for img in fakes:
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif float(torch.rand(())) < 0.5:
                i = int(torch.randint(len(self.images), ()))
                out.append(self.images[i].to(img.dtype))
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able: the stored images as base64 float32 bytes."""
        import base64

        if not self.images:
            return {"shape": None, "data": ""}
        t = torch.stack(self.images).float().cpu().contiguous()
        return {"shape": list(t.shape), "data": base64.b64encode(t.numpy().tobytes()).decode("ascii")}

    def load_state_dict(self, state: dict[str, Any], device: Any = None) -> None:
        import base64

        import numpy as np

        self.images = []
        if state and state.get("shape"):
            arr = np.frombuffer(base64.b64decode(state["data"]), dtype=np.float32).reshape(state["shape"])
            self.images = list(torch.from_numpy(arr.copy()).to(device))


@dataclass
class CycleGANOptions:
    #: class index of domain A and of domain B (Fashion-MNIST: 7 sneaker, 9 ankle boot)
    domain_a: Annotated[NonNegInt, "a class index"] = 7
    domain_b: Annotated[NonNegInt, "a class index"] = 9
    #: adversarial loss (Zhu et al. use least squares)
    loss: GANLoss = "least-squares"
    #: weight of the two adversarial terms of the generator loss
    adv_weight: Weight = 1.0
    #: λ of the cycle-consistency L1 (Zhu et al.: 10)
    cycle_weight: Weight = 10.0
    #: weight of the identity L1 ``|G_ab(b) − b| + |G_ba(a) − a|`` (Zhu et al.: 0.5 λ)
    identity_weight: Weight = 5.0
    #: size of each discriminator's history of fakes (Zhu et al.: 50; 0 = the current batch only)
    pool_size: Annotated[NonNegInt, "0: the current batch only"] = 50
    #: PatchGAN width and number of stride-2 layers (on 28×28, 2: 7×7 logits seeing 18×18 patches;
    #: 3: 3×3 logits seeing 38×38, the whole garment: needed to judge a silhouette)
    d_base: PosInt = 32
    d_layers: DLayers = 2
    #: rate of A->B translations classified as B by the fmnist feature net (None: only on fashion-mnist)
    classify: bool | None = None


@METHODS.register("cyclegan", help="CycleGAN: two U-Nets, two PatchGANs, LSGAN + cycle + identity L1, pool of fakes (unpaired)")
class CycleGANMethod(GenerativeMethod, TranslatesImages):
    """CycleGAN (Zhu et al. 2017; course 004 "CycleGAN: Traduction d'Image Non-Supervisée"):
    ``G_ab: A -> B``, ``G_ba: B -> A``, discriminators ``D_a``, ``D_b`` (unconditional
    PatchGANs) on two **unpaired** domains, the images of classes ``domain_a`` and
    ``domain_b``. Generator loss (optimizer ``"G"``, both generators), the paper's eq. (3)
    ``L_GAN(G_ab, D_b) + L_GAN(G_ba, D_a) + λ L_cyc`` plus its identity term (§5.2)::

        adv_weight · (g_loss(D_b(G_ab(a))) + g_loss(D_a(G_ba(b))))
        + cycle_weight · (|G_ba(G_ab(a)) − a|₁ + |G_ab(G_ba(b)) − b|₁)       (cycle, eq. 2)
        + identity_weight · (|G_ab(b) − b|₁ + |G_ba(a) − a|₁)                (identity)

    and ``d_loss`` for each discriminator (optimizer ``"D"``; least squares by default, the
    paper's LSGAN, course §8 losses in :mod:`~profond.methods.gan_losses`) on real images
    against fakes drawn from an :class:`ImagePool` of past fakes (``pool_size``).
    Training batches are the mixed A/B images of the filtered training set, split by label
    (the pairs are never used).

    Why the defaults (the paper's loss weights) translate poorly here (sneaker <-> ankle
    boot differ in silhouette, not texture): with a U-Net whose full-resolution skip carries
    the input to the output, the identity term and an 18×18-patch discriminator, the
    generators settle on a near-identity map (a small cycle L1, but almost no "boots"
    recognised as boots). What makes the translation happen (recipe ``fmnist-cyclegan``):
    ``model.skips=inner`` (no pixel-copy path: the output is redrawn from ≤ H/2 features),
    ``model.norm=instance`` (per-image statistics), ``identity_weight`` 0.5, ``d_layers=3``
    (3×3 logits, each seeing the whole garment: a silhouette is not a local texture), equal
    G / D learning rates, a cosine-decayed LR.

    :meth:`evaluate`: ``cycle_l1`` (mean of both directions, the monitored ``loss``),
    ``cycle_psnr``, ``identity_l1`` and, on Fashion-MNIST, ``to_b_rate`` / ``to_a_rate``:
    the fraction of translated images the fmnist feature net classifies as the target class
    (next to ``real_b_rate`` / ``real_a_rate``, its accuracy on real images, and
    ``source_as_b_rate`` / ``source_as_a_rate``, the rates for untranslated images: the no-op
    baseline).
    """

    Options = CycleGANOptions
    ema_nets = ("G_ab", "G_ba")
    monitor = ("val_loss", "min")
    #: generator model names accepted in cfg.model.name
    generators: tuple[str, ...] = ("unet",)

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env, with_data=False)
        o = self.opts  # types, choices and ranges: the annotations of CycleGANOptions
        k = len(self.classes)
        if not (o.domain_a < k and o.domain_b < k) or o.domain_a == o.domain_b:
            raise ConfigError(f"method.domain_a / domain_b must be two different classes in 0..{k - 1}.")
        check_d_layers(o.d_layers, self.image_shape)
        if cfg.model.name not in self.generators:
            raise ConfigError(f"method 'cyclegan' needs model.name in {list(self.generators)}, "
                              f"got {cfg.model.name!r}.")
        if with_data:
            self.train_data, self.val_data = self.build_loaders()
        c = self.image_shape[0]
        d = dict(in_channels=c, base=o.d_base, n_layers=o.d_layers)
        self.nets = {"G_ab": self.build_model(), "G_ba": self.build_model(),
                     "D_a": MODELS.build("patchgan", **d), "D_b": MODELS.build("patchgan", **d)}
        #: histories of fake A (for D_a) and fake B (for D_b)
        self.pools = {"a": ImagePool(o.pool_size), "b": ImagePool(o.pool_size)}
        self._feat: nn.Module | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"pools": {k: p.state_dict() for k, p in self.pools.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, s in state.get("pools", {}).items():
            self.pools[k].load_state_dict(s, device=self.env.device)

    def _keep(self, y: Tensor) -> Tensor:
        return (y == self.opts.domain_a) | (y == self.opts.domain_b)

    def build_loaders(self, x: Tensor | None = None, y: Tensor | None = None):
        x = self.data.train_x if x is None else x
        y = self.data.train_y if y is None else y
        keep = self._keep(y)
        return super().build_loaders(x[keep], y[keep])

    def test_data(self):
        d = self.data
        keep = self._keep(d.test_y)
        return self.eval_batches(d.test_x[keep], d.test_y[keep])

    def optimizer_params(self) -> dict[str, Any]:
        def params(*names: str) -> list[Tensor]:
            return [p for n in names for p in self.raw_nets[n].parameters() if p.requires_grad]

        return {"G": params("G_ab", "G_ba"), "D": params("D_a", "D_b")}

    def split(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return x[y == self.opts.domain_a], x[y == self.opts.domain_b]

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        x, y = batch
        a, b = self.split(x, y)
        if len(a) == 0 or len(b) == 0:  # a batch with one domain only: nothing to pair against
            return {}
        o, n = self.opts, self.nets
        with ctx.autocast():
            fake_b, fake_a = n["G_ab"](a), n["G_ba"](b)
            past_b, past_a = self.pools["b"].query(fake_b), self.pools["a"].query(fake_a)
            ld = (d_loss(o.loss, n["D_b"](b), n["D_b"](past_b))
                  + d_loss(o.loss, n["D_a"](a), n["D_a"](past_a)))
        ctx.optimize(ld, "D")
        with ctx.autocast():
            adv = (g_loss(o.loss, n["D_b"](fake_b)) + g_loss(o.loss, n["D_a"](fake_a))
                   if o.adv_weight > 0 else fake_b.new_zeros((), dtype=torch.float32))
            cyc = (n["G_ba"](fake_b) - a).abs().mean() + (n["G_ab"](fake_a) - b).abs().mean()
            idt = ((n["G_ab"](b) - b).abs().mean() + (n["G_ba"](a) - a).abs().mean()
                   if o.identity_weight > 0 else cyc.new_zeros(()))
            lg = o.adv_weight * adv + o.cycle_weight * cyc + o.identity_weight * idt
        ctx.optimize(lg, "G")
        return {"loss_d": ld.detach(), "loss_g": lg.detach(), "adv": adv.detach(), "cycle": cyc.detach(),
                "identity": idt.detach()}

    def classify(self) -> bool:
        c = self.opts.classify
        return self.data.name == "fashion-mnist" if c is None else bool(c)

    def feature_net(self) -> nn.Module:
        if self._feat is None:
            from ..metrics.generative import load_feature_net

            self._feat = load_feature_net("fmnist", device=self.env.device)
        return self._feat

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        """Cycle / identity L1, cycle PSNR and the target-class rates (class docstring); the
        same metrics with ``detailed=True`` (``profond eval``)."""
        o = self.opts
        s: dict[str, float] = {}
        na = nb = 0

        def add(k: str, v: Tensor) -> None:
            s[k] = s.get(k, 0.0) + float(v.double().sum())

        with self.eval_mode("G_ab") as gab, self.eval_mode("G_ba") as gba:
            for x, y in batches.batches(0):
                a, b = self.split(x.float(), y)
                fb, fa = gab(a).float(), gba(b).float()
                ra, rb = gba(fb).float().clamp(0, 1), gab(fa).float().clamp(0, 1)
                add("cycle_a", (ra - a).abs().flatten(1).mean(1))
                add("cycle_b", (rb - b).abs().flatten(1).mean(1))
                add("cycle_psnr_a", psnr(ra, a))
                add("cycle_psnr_b", psnr(rb, b))
                add("identity_a", (gba(a).float() - a).abs().flatten(1).mean(1))
                add("identity_b", (gab(b).float() - b).abs().flatten(1).mean(1))
                if self.classify():
                    net = self.feature_net()
                    add("to_b", net(fb)[1].argmax(1) == o.domain_b)
                    add("to_a", net(fa)[1].argmax(1) == o.domain_a)
                    add("real_b", net(b)[1].argmax(1) == o.domain_b)
                    add("real_a", net(a)[1].argmax(1) == o.domain_a)
                    add("source_as_b", net(a)[1].argmax(1) == o.domain_b)
                    add("source_as_a", net(b)[1].argmax(1) == o.domain_a)
                na, nb = na + len(a), nb + len(b)
        na, nb = max(na, 1), max(nb, 1)
        res = {"cycle_l1": 0.5 * (s.get("cycle_a", 0.0) / na + s.get("cycle_b", 0.0) / nb),
               "cycle_psnr": 0.5 * (s.get("cycle_psnr_a", 0.0) / na + s.get("cycle_psnr_b", 0.0) / nb),
               "identity_l1": 0.5 * (s.get("identity_a", 0.0) / na + s.get("identity_b", 0.0) / nb)}
        res["loss"] = res["cycle_l1"]
        if self.classify():
            res.update({f"{k}_rate": s.get(k, 0.0) / (na if k in ("to_b", "real_a", "source_as_b") else nb)
                        for k in ("to_b", "to_a", "real_b", "real_a", "source_as_b", "source_as_a")})
        return res

    def make_inputs(self, x01: Tensor) -> Tensor:
        """Unpaired: the input of ``A -> B`` is an image of domain A as it is."""
        return x01.float()

    @torch.no_grad()
    def translate(self, inputs: Tensor, direction: str = "ab") -> Tensor:
        """``G_ab(inputs)`` (``direction="ab"``) or ``G_ba(inputs)`` in [0, 1], CPU."""
        if direction not in ("ab", "ba"):
            raise ConfigError(f"direction must be 'ab' or 'ba', got {direction!r}.")
        with self.eval_mode(f"G_{direction}") as g:
            return batched(lambda a: g(a).float().clamp(0, 1), self.to_device(inputs), 500).cpu()

    def describe(self) -> dict[str, Any]:
        o = self.opts
        return {**super().describe(), "domain_a": self.classes[o.domain_a], "domain_b": self.classes[o.domain_b],
                "can_translate": True}

    def domain_labels(self) -> dict[str, str]:
        """``{"a": "A (sneaker)", "b": "B (ankle boot)"}``."""
        return {k: f"{k.upper()} ({self.classes[getattr(self.opts, f'domain_{k}')]})" for k in ("a", "b")}

    def translation_figures(self, req: TranslationRequest) -> Artifacts:
        """translation-ab.png (or -ba): source | translated | translated back, with the PSNR of
        the cycle against the source; ``--input`` indices count the source domain's test images."""
        if req.direction not in ("ab", "ba"):
            raise ProfondError(f"--direction {req.direction!r}: use ab or ba.")
        src, dst = req.direction[0], req.direction[1]
        x, y = self.test_images()
        a, b = self.split(x, y)
        inputs, _, names, notes = pick_inputs(self, a if src == "a" else b, req, domain=src.upper())
        dom = self.domain_labels()
        fwd = self.translate(inputs, direction=req.direction)
        back = self.translate(fwd, direction=dst + src)
        p_cycle = psnr(back, inputs).tolist()
        arrow = f"{src.upper()}→{dst.upper()}"
        path = save_image_table([inputs, fwd, back], req.folder / f"translation-{req.direction}.png",
                                [dom[src], arrow, f"{arrow}→{src.upper()}"], row_labels=names,
                                notes=[None, None, [f"{v:.1f} dB" for v in p_cycle]],
                                title=f"{req.run_name}: {dom[src]} → {dom[dst]} → back (PSNR of the cycle vs the "
                                      "source)")
        table = psnr_table("PSNR of the cycle vs the source (dB)", ["example", "cycle PSNR (dB)"],
                           [(nm, [v]) for nm, v in zip(names, p_cycle, strict=True)])
        return Artifacts(files=[path], tables=[table], notes=notes)
