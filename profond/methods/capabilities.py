"""What a method can do beyond training, declared so that the CLI can ask.

A method declares a capability by inheriting its class (``class VAEMethod(GenerativeMethod,
SamplesImages, Reconstructs, ExploresLatent)``); ``profond sample``, ``latent``, ``eval``,
``generate``, ``gates`` and ``translate`` dispatch on :func:`supports` and never name a
family. A new family gets those commands by declaring what it supports: no edit under
``profond/cli/``.

Each capability is a small abstract interface. What a capability draws or prints (figures,
tables, notes) comes back as :class:`Artifacts`, which the CLI renders; the presentation of a
family (its panels, grids, labels) lives with the family.

=====================  ===================================================  ==================
capability             what the method provides                             used by
=====================  ===================================================  ==================
``SamplesImages``      ``sample(n, seed=, labels=)``: new images in [0, 1]    sample, eval
``Reconstructs``       ``reconstruct(x)``: images back through the model      sample --recon
``ExploresLatent``     ``latent_figures(request)``: its latent-space figures  latent
``ExportsCodes``       ``export_codes(path, split=, run=)``: discrete codes   latent --codes
``TranslatesImages``   ``translation_figures(request)``: input -> output      sample --input
``GeneratesText``      ``generate(prompt, n=, length=, ...)``: text           generate
``TracesGates``        ``gate_figure(text, path, ...)``: recurrent gates      gates
``TranslatesText``     ``translate_texts(texts, beam=)``: text -> text        translate
``AttentionMaps``      ``attention_figure(text, path, ...)``: attention       translate --attention-png
``ChoosesSampler``     ``use_sampler(request)``: sampler, steps, guidance     sample, eval
``ScoresLikelihood``   ``image_bpd(x)``: bits per dimension of images        eval --images
``SamplesAtTemperature`` ``set_temperature(tau)``: sharper / wider samples   sample --temperature
``ExplainsImages``     ``pixel_model()``, ``test_image(k)``: attributions    explain
``ExplainsTokens``     ``token_ids(text)``, ``token_labels(ids)``            explain --text
=====================  ===================================================  ==================
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from ..errors import ProfondError


@dataclass
class Table:
    """A table to print: the first column is a label (left-aligned), the others values."""

    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Artifacts:
    """What a capability wrote and has to say: ``files`` (printed on stdout, one per line),
    ``tables``, ``lines`` (stdout) and ``notes`` (stderr, e.g. what a default chose)."""

    files: list[Path] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Capability(abc.ABC):  # noqa: B024  (a marker base: each capability declares its methods)
    """Base of the capability interfaces. ``needs`` completes the error a command prints for
    a run that lacks the capability: "`profond CMD` needs {needs}"."""

    needs: ClassVar[str] = "a run that supports it"


def supports(method_or_class: Any, capability: type[Capability]) -> bool:
    """Whether a method (instance or class) declares ``capability``."""
    cls = method_or_class if isinstance(method_or_class, type) else type(method_or_class)
    return issubclass(cls, capability)


# -- images -----------------------------------------------------------------------------------
class SamplesImages(Capability):
    """Draws new images from the model's prior (``profond sample``; the sample metrics of
    ``profond eval``). The method also has ``classes`` and ``test_images()``."""

    needs = "a run that samples images (a VAE, GAN or diffusion run)"

    @abc.abstractmethod
    def sample(self, n: int, *, seed: int = 0, labels: Tensor | None = None) -> Tensor:
        """``n`` new images, float [0, 1], ``(n, C, H, W)`` on the CPU; deterministic in
        ``seed``. ``labels`` conditions class-conditional models (ignored otherwise)."""


class Reconstructs(Capability):
    """Passes images through the model and back (``profond sample --recon``)."""

    needs = "a run that reconstructs images (an autoencoder, VAE or VQ-VAE run)"
    #: why a method that reconstructs but does not declare :class:`SamplesImages` cannot sample
    no_sampling_reason: ClassVar[str] = "it has no prior"

    @abc.abstractmethod
    def reconstruct(self, x: Tensor) -> Tensor:
        """Reconstructions in [0, 1] (CPU) of [0, 1] images."""

    @abc.abstractmethod
    def test_images(self, n: int | None = None) -> tuple[Tensor, Tensor]:
        """The first ``n`` test images as float [0, 1] CPU tensors, with their labels."""


@dataclass
class LatentRequest:
    """The options of ``profond latent``; each family uses those that apply to it and refuses
    (with the fix) those given that do not."""

    folder: Path
    run_name: str
    a: int = 0
    b: int = 1
    steps: int = 10
    pairs: int = 4
    label: int | None = None
    dims: int = 8
    range: float = 3.0
    center: str = "image"
    points: int = 5000
    seed: int = 0


class ExploresLatent(Capability):
    """Draws figures of its latent space (``profond latent``): interpolations, traversals,
    scatters, class grids, whatever the family's latent supports."""

    needs = "a run with a vector latent space (an AE, VAE or GAN run)"

    @abc.abstractmethod
    def latent_figures(self, request: LatentRequest) -> Artifacts:
        """Write the figures into ``request.folder``."""


class ExportsCodes(Capability):
    """Has discrete codes and exports them (``profond latent --codes``)."""

    needs = "a run with discrete codes (a VQ-VAE run)"

    @abc.abstractmethod
    def export_codes(self, path: Path, *, split: str = "test", run: str = "") -> Path:
        """Write the code indices of ``split`` (safetensors) to ``path``."""


@dataclass
class TranslationRequest:
    """The options of ``profond sample`` on a run that translates images."""

    folder: Path
    run_name: str
    #: ``--input``: test indices (``17``, ``0,5,9``, ``0:8``) or an image file; None: the first few
    spec: str | None = None
    #: ``--n`` without ``--input``: how many test images
    n: int | None = None
    #: the image file already is the model input (no target, no PSNR)
    as_input: bool = False
    #: the image file is a dark object on a light page: use 1 - pixel
    invert: bool = False
    #: ``ab`` or ``ba``, for a method that translates both ways
    direction: str = "ab"


class TranslatesImages(Capability):
    """Maps an input image to an output image instead of sampling (``profond sample
    --input``): Pix2Pix, super-resolution, CycleGAN."""

    needs = "a run that translates images (an image-to-image run: pix2pix, srgan, cyclegan)"

    @abc.abstractmethod
    def translation_figures(self, request: TranslationRequest) -> Artifacts:
        """Translate the requested inputs and write the panels into ``request.folder``."""


# -- text -------------------------------------------------------------------------------------
def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """The sampling options of a text generator: temperature >= 0 (0 = greedy), top-k >= 1,
    top-p in (0, 1]."""
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ProfondError(f"--temperature {temperature}: use a number >= 0 (0 = greedy).")
    if top_k is not None and top_k < 1:
        raise ProfondError(f"--top-k {top_k}: use an integer >= 1 (or leave it out).")
    if top_p is not None and not 0 < top_p <= 1:
        raise ProfondError(f"--top-p {top_p}: use a probability in (0, 1] (1 = no nucleus filtering).")


class GeneratesText(Capability):
    """Continues a prompt (``profond generate``)."""

    needs = ("a run that generates text (a character language model: "
             "profond train char-lm -d fortune-chars)")

    @abc.abstractmethod
    def generate(self, prompt: str = "", *, n: int = 1, length: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0) -> list[str]:
        """``n`` continuations of ``prompt`` (each starting with it), ``length`` tokens each,
        sampled from softmax(logits / temperature) within the top-k and the top-p nucleus."""


class TracesGates(Capability):
    """Shows its recurrent gates over a text (``profond gates``, course exercise 5.4.2)."""

    needs = ("a run with an LSTM or GRU that reads text (a char-lm or text-classifier run, e.g. "
             "profond train --recipe fortune-char-lstm)")

    @abc.abstractmethod
    def gate_figure(self, text: str, path: Path, *, layer: int = 0, units: int | None = None) -> Artifacts:
        """Draw the gates of ``layer`` over ``text`` into ``path``."""


class TranslatesText(Capability):
    """Maps a text to a text (``profond translate``)."""

    needs = "a run that translates text (a seq2seq run: profond train --recipe numbers-fr-attention)"

    @abc.abstractmethod
    def translate_texts(self, texts: list[str], *, beam: int = 1) -> list[str]:
        """One output per input (greedy for ``beam=1``, else beam search)."""


class AttentionMaps(Capability):
    """Exposes the attention weights it computes, as figures."""

    needs = "a run whose model has attention"

    @abc.abstractmethod
    def attention_figure(self, text: str, path: Path, **options: Any) -> Artifacts:
        """Draw the attention of the model reading ``text`` into ``path`` (a ProfondError
        naming the fix when this run's model has no attention)."""


# -- iterative samplers -------------------------------------------------------------------------
@dataclass
class SamplerRequest:
    """The sampler options of ``profond sample`` / ``profond eval`` (None: the run's default)."""

    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None
    guidance: float | None = None

    def given(self) -> list[str]:
        """The flags the user gave, as typed on the command line."""
        names = {"sampler": "--sampler", "steps": "--steps", "eta": "--eta", "guidance": "--guidance"}
        return [flag for key, flag in names.items() if getattr(self, key) is not None]


class ChoosesSampler(Capability):
    """Samples by integrating a learned process in several network calls, with a choice of
    sampler, number of steps, stochasticity and guidance (``profond sample --sampler ddim
    --steps 50``, ``profond eval --steps S``), and can draw one reverse trajectory
    (``profond sample --trajectory``)."""

    needs = "a run with iterative samplers (a diffusion or flow-matching run)"

    @abc.abstractmethod
    def use_sampler(self, request: SamplerRequest) -> dict[str, Any]:
        """Check ``request`` against this run (a ProfondError naming the fix) and make the next
        :meth:`SamplesImages.sample` calls use it; returns the resolved settings (sampler,
        steps, eta, guidance, network calls per image) to print and record."""

    @abc.abstractmethod
    def trajectory_figures(self, folder: Path, run_name: str, *, n: int = 8, seed: int = 0,
                           label: int | None = None) -> Artifacts:
        """One reverse trajectory of ``n`` samples: x_t and the predicted x_0 every few steps
        (a strip PNG) and a GIF of x_t."""


# -- exact likelihoods ----------------------------------------------------------------------------
class ScoresLikelihood(Capability):
    """Gives each image an exact log-likelihood (or a bound on it) in bits per dimension
    (:mod:`profond.metrics.likelihood`): ``profond eval RUN --images FILE_OR_FOLDER``
    scores a user's own images; ``profond eval RUN`` reports the test set's ``bpd``."""

    needs = "a run with an exact likelihood (a normalizing flow or PixelCNN run)"

    @abc.abstractmethod
    def image_bpd(self, x: Tensor, *, seed: int = 0) -> Tensor:
        """Bits per dimension ``(N,)`` (CPU, float64) of images ``x`` ``(N, C, H, W)`` in [0, 1]
        of this run's shape, read as 8-bit levels; deterministic in ``seed`` (dequantization)."""


class SamplesAtTemperature(Capability):
    """Samples at a temperature τ (``profond sample RUN --temperature 0.7``): a flow scales its
    prior's standard deviation by τ, an autoregressive model divides its logits by τ."""

    needs = "a run whose sampler has a temperature (a normalizing flow or PixelCNN run)"

    @abc.abstractmethod
    def set_temperature(self, tau: float) -> None:
        """Make the next :meth:`SamplesImages.sample` calls draw at temperature ``tau`` (> 0,
        checked by the CLI; 1: the model's own distribution)."""


# -- explanations (course §12.5) ---------------------------------------------------------------
class ExplainsImages(Capability):
    """An image classifier whose class scores ``profond explain`` attributes to pixels (saliency,
    Integrated Gradients, Grad-CAM, occlusion, Shapley values). The method also has ``classes``."""

    needs = "an image-classifier run (method classifier)"

    @abc.abstractmethod
    def pixel_model(self) -> Any:
        """The trained net as a function of images in [0, 1] ``(B, C, H, W) -> logits (B, K)``,
        in eval mode, with the run's standardisation inside; the net's layers are named
        ``net.<name>`` in it (``<name>`` as in ``raw_nets["model"].named_modules()``)."""

    @abc.abstractmethod
    def test_image(self, index: int) -> tuple[Tensor, str]:
        """Test image ``index`` ``(1, C, H, W)`` in [0, 1] and a line saying what it is; a
        :class:`~profond.errors.ProfondError` naming the valid range when out of range."""

    @abc.abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images the model takes (a user's image is resized to it)."""


class ExplainsTokens(Capability):
    """A text classifier whose class scores ``profond explain --text`` attributes to tokens
    (through its token embeddings). The method also has ``classes``."""

    needs = "a text-classifier run"

    @abc.abstractmethod
    def token_ids(self, text: str) -> list[int]:
        """``text`` as the model reads it: token ids, cut to the run's maximum length."""

    @abc.abstractmethod
    def token_labels(self, ids: list[int]) -> list[str]:
        """One printable label per token id."""
