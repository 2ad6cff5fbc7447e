"""``profond sample``: new images from a run that samples, reconstructions from one that
reconstructs, translations from one that translates images."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from ..errors import ProfondError
from ..methods.capabilities import (
    ChoosesSampler,
    Reconstructs,
    SamplerRequest,
    SamplesAtTemperature,
    SamplesImages,
    TranslatesImages,
    TranslationRequest,
    supports,
)
from .common import (
    CheckpointOpt,
    DataDirOpt,
    DeviceOpt,
    EtaOpt,
    GuidanceOpt,
    SamplerOpt,
    StepsOpt,
    app,
    apply_sampler,
    err,
    examples,
    load_method,
    no_capability,
    render,
    show,
    user_errors,
)
from .evaluate import draw_samples

DEFAULT_N = 64
#: the most images one samples.png (or translation figure) holds: a 100 x 100 grid
MAX_GRID_IMAGES = 10_000


@app.command(epilog=examples(
    "profond sample runs/vae-fashion-mnist-20261122-101500",
    "profond sample RUN_DIR --n 100 --seed 3 --out figs/",
    "profond sample RUN_DIR --recon   (also reconstructions.png; the only output for an AE)",
    "profond sample runs/pix2pix-... --input 0:8   (image-to-image: translation.png)",
    "profond sample runs/srgan-... --input shoe.png   (the file is the 28x28 target, downsampled)",
    "profond sample runs/srgan-... --input small.png --as-input   (the file is the low-res input)",
    "profond sample runs/cyclegan-... --input 0,5,9 --direction ba",
    "profond sample runs/diffusion-... --sampler ddim --steps 50 --eta 0   (diffusion: DDIM, 50 network calls)",
    "profond sample runs/diffusion-... --sampler ddpm --trajectory   (ancestral, all T steps; trajectory.png/.gif)",
    "profond sample runs/diffusion-cond-... --guidance 3 --label 7   (classifier-free guidance, one class)",
    "profond sample runs/glow-... --temperature 0.7   (flows, PixelCNN: sharper, less diverse samples)"))
@user_errors
def sample(
    run_dir: Path = typer.Argument(..., help="A run folder of a generative model (`profond train vae ...`) or of an "
                                   "image-to-image model (pix2pix, srgan, cyclegan)."),
    n: int = typer.Option(None, "--n", "-n", help=f"Number of samples (default {DEFAULT_N}). Image-to-image runs "
                          "without --input: translate the first N test images (default 8)."),
    nrow: int = typer.Option(None, "--nrow", help="Images per row (default ≈ sqrt(n))."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (same seed, same images)."),
    label: int = typer.Option(None, "--label", help="Class index for class-conditional models (ignored otherwise)."),
    recon: bool = typer.Option(False, "--recon", help="Also write reconstructions.png: test images (odd rows) "
                               "above their reconstructions (even rows)."),
    input_: str = typer.Option(None, "--input", "-i", help="Image-to-image runs: a test index (17), a list (0,5,9) "
                               "or a range (0:8, end excluded) of test images, or an image file (PNG/JPG, any size "
                               "or mode: converted to grayscale and resized to the model's images, values in [0, 1]). "
                               "A file is the TARGET-domain image (a garment) from which the task input is built as "
                               "for the test images: its edges (pix2pix edges), its masked copy (pix2pix inpaint), "
                               "its downsampled copy (srgan), itself as a domain-A image (cyclegan; domain B with "
                               "--direction ba). CycleGAN indices count the source domain's test images."),
    as_input: bool = typer.Option(False, "--as-input", help="With an image file: it already is the model input "
                                  "(an edge map, a masked image, a low-res image, resized to the input size); "
                                  "the figure then has no target column and no PSNR."),
    invert: bool = typer.Option(False, "--invert", help="With an image file: use 1 - pixel (a dark object on a "
                                "white page; the datasets have light objects on black)."),
    direction: str = typer.Option("ab", "--direction", help="CycleGAN: ab (A -> B -> A) or ba (B -> A -> B)."),
    sampler_: SamplerOpt = None,
    steps: StepsOpt = None,
    eta: EtaOpt = None,
    guidance: GuidanceOpt = None,
    temperature: float = typer.Option(None, "--temperature", "-t", help="Flow and PixelCNN runs: sampling "
                                      "temperature τ > 0 (a flow draws z ~ N(0, τ²I); a PixelCNN divides its "
                                      "logits by τ); default 1, the model's own distribution."),
    trajectory: bool = typer.Option(False, "--trajectory", help="Diffusion / flow runs: also trajectory.png "
                                    "(x_t and the predicted x_0 along the reverse process) and trajectory.gif."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Output folder (default: the run folder)."),
    checkpoint: CheckpointOpt = "last",
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
) -> None:
    """Draw new images from a generative run: writes samples.png (a grid, nrow ≈ sqrt(n)).

    Image-to-image runs (pix2pix, srgan: course seed 004 "Pix2Pix", "Super-Résolution avec
    GANs") cannot sample: they translate. `--input` picks test images or an image file and
    writes translation.png, one row per example: input | naive baseline (mean image, mean fill
    or bicubic) | output | target, with the PSNR under each prediction, and prints a table of
    the per-example PSNR of the output and of the baseline against the target. CycleGAN runs
    write translation-ab.png (or -ba): source | translated | translated back, and the PSNR of
    the cycle against the source. Without --input the first few test images are translated.
    """
    import torch

    from ..base.limits import check_count, check_fits
    from ..data.inputs import pick_indices
    from ..viz.images import grid_size, save_grid

    if n is not None and n < 1:
        raise ProfondError(f"--n {n}: draw at least one sample.")
    if n is not None:
        check_count(n, MAX_GRID_IMAGES, "--n (the images of one figure)",
                    "draw several figures with different --seed, or use `profond eval RUN --n N` for the "
                    "sample metrics of many images")
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        raise ProfondError(f"--temperature {temperature}: use a temperature > 0 (1: the model's own "
                           "distribution; below 1: sharper, less diverse samples).")
    method, trainer = load_method(run_dir, checkpoint=checkpoint, device=device, data_dir=data_dir)
    folder = Path(out_dir) if out_dir else Path(run_dir)
    name = trainer.cfg.method.name
    if temperature is not None:
        if not supports(method, SamplesAtTemperature):
            raise no_capability(method, "sample --temperature", SamplesAtTemperature)
        method.set_temperature(temperature)
    if supports(method, TranslatesImages):
        if recon:
            raise ProfondError(f"--recon is for autoencoders; method {name!r} translates images: "
                               "drop --recon (`profond sample RUN --input 0:8` writes translation.png).")
        render(method.translation_figures(TranslationRequest(
            folder=folder, run_name=Path(run_dir).name, spec=input_, n=n, as_input=as_input, invert=invert,
            direction=direction)))
        return
    settings = apply_sampler(method, SamplerRequest(sampler_, steps, eta, guidance), "sample")
    if trajectory and not supports(method, ChoosesSampler):
        raise no_capability(method, "sample --trajectory", ChoosesSampler)
    if input_ is not None or as_input or invert or direction != "ab":
        flag = ("--input" if input_ is not None else "--as-input" if as_input else "--invert" if invert
                else "--direction")
        raise ProfondError(f"{flag} is for image-to-image runs (pix2pix, srgan, cyclegan); run {str(run_dir)!r} is "
                           f"a {name!r} run: drop {flag} (`profond sample RUN --n N` draws new images).")
    sampler, recons = supports(method, SamplesImages), supports(method, Reconstructs)
    if not sampler and not recons:
        raise no_capability(method, "sample", SamplesImages, Reconstructs, TranslatesImages)
    if not sampler and not recon:
        raise ProfondError(f"method {name!r} cannot sample new images: {method.no_sampling_reason}; use a VAE, GAN "
                           "or diffusion run (`profond sample RUN --recon` writes reconstructions instead).")
    if nrow is not None and nrow < 1:
        raise ProfondError(f"--nrow {nrow}: use at least one image per row.")
    n = DEFAULT_N if n is None else n
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    if sampler:
        c, h, w = method.test_images(1)[0].shape[1:]
        gw, gh = grid_size(n, h, w, nrow=cols)
        png = 3 * gw * gh  # uncompressed RGB pixels: what PIL holds and a bound on the file
        what = f"samples.png of {n:,} images ({gw:,} x {gh:,} pixels)"
        check_fits(n * c * h * w * 4 + 2 * png, what, "lower --n or --nrow")
        check_fits(png, what, "lower --n, or write elsewhere with --out", memory=False, disk=folder)
    written = []
    if sampler:
        labels = None
        if label is not None:
            if not 0 <= label < len(method.classes):
                raise ProfondError(f"--label {label}: use a class index in 0..{len(method.classes) - 1}.")
            labels = torch.full((n,), label, dtype=torch.long)
        x = draw_samples(method, n, seed=seed, batch_size=1000, show_progress=n > 1000 and err.is_terminal,
                         labels=labels)
        written.append(save_grid(x, folder / "samples.png", nrow=cols))
        if settings:
            show("sampler: " + ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None), stderr=True)
    if trajectory:
        render(method.trajectory_figures(folder, Path(run_dir).name, n=min(n, 16), seed=seed, label=label))
    if recon:
        if not recons:
            raise no_capability(method, "sample --recon", Reconstructs)
        x, _ = method.test_images()
        k = min(cols, len(x))
        rows = max(1, math.ceil(n / cols) // 2)  # as many image/reconstruction row pairs as fit n
        xs = x[pick_indices(len(x), min(k * rows, len(x)), seed)]
        rec = method.reconstruct(xs).cpu()
        pairs = [t for r in range(0, len(xs), k) for t in (xs[r: r + k], rec[r: r + k])]
        written.append(save_grid(torch.cat(pairs), folder / "reconstructions.png", nrow=k))
        if not sampler:
            show(f"note: method {name!r} has no prior to sample; wrote reconstructions only.", stderr=True)
    for p in written:
        show(str(p))
