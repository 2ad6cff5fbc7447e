"""``profond latent``: the latent-space figures of a run, or the export of its discrete codes."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ProfondError
from ..methods.capabilities import ExploresLatent, ExportsCodes, LatentRequest, supports
from .common import (
    CheckpointOpt,
    DataDirOpt,
    DeviceOpt,
    app,
    examples,
    load_method,
    render,
    show,
    user_errors,
)

SPLITS = ("test", "train")


@app.command(epilog=examples(
    "profond latent runs/vae-fashion-mnist-20261122-101500",
    "profond latent RUN_DIR --a 0 --b 7 --steps 12 --dims 8 --range 2.5 --out figs/",
    "profond latent runs/vqvae-... --codes   (VQ-VAE: export the code indices as safetensors)",
    "profond latent runs/gan-... --pairs 6 --steps 12 --seed 3   (GAN: linear vs slerp)",
    "profond latent runs/cgan-... --steps 8   (conditional GAN: also class_grid.png)"))
@user_errors
def latent(
    run_dir: Path = typer.Argument(..., help="A run folder of a model with a latent space (AE, VAE, GAN, ...)."),
    a: int = typer.Option(0, "--a", help="Test image index: start of the interpolation and centre of the traversal."),
    b: int = typer.Option(1, "--b", help="Test image index: end of the interpolation."),
    steps: int = typer.Option(10, "--steps", help="Images along the interpolation and values per traversal row "
                              "(GAN: also the z columns of the class grid)."),
    pairs: int = typer.Option(4, "--pairs", help="GAN: pairs of sampled codes interpolated (two rows each)."),
    label: int = typer.Option(None, "--label", help="Conditional GAN: class of every interpolation (default: "
                              "pair k uses class k mod K)."),
    dims: int = typer.Option(8, "--dims", help="Latent dimensions in the traversal (the most active ones)."),
    range_: float = typer.Option(3.0, "--range", help="Traversal values in [-range, range] (prior std units for a "
                                 "VAE, the dimension's std for an AE) around the centre."),
    center: str = typer.Option("image", "--center", help="Traversal centre: image (the code of test image --a) or zero."),
    points: int = typer.Option(5000, "--points", help="Test images in the latent scatter."),
    codes: bool = typer.Option(False, "--codes", help="VQ-VAE: export the code indices of a split (safetensors) instead."),
    split: str = typer.Option("test", "--split", help="With --codes: test or train."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Output folder (default: the run folder)."),
    checkpoint: CheckpointOpt = "last",
    device: DeviceOpt = "auto",
    seed: int = typer.Option(0, "--seed", help="Seed (which test images the scatter shows when --points < test set; "
                             "GAN: the codes z)."),
    data_dir: DataDirOpt = None,
) -> None:
    """Explore a latent space.

    AE / VAE: writes interpolation.png (linear path between the codes of test images --a and
    --b), traversal.png (one latent dimension at a time) and latent_scatter.png (test posterior
    means by class; PCA when the latent has more than 2 dimensions).

    GAN (no encoder: --a/--b/--dims/--range/--center/--points do not apply): writes
    interpolation.png, --pairs pairs of codes z_a, z_b drawn from N(0, I) with --seed, each
    decoded along a linear path (1 - t) z_a + t z_b and a spherical one (slerp: sin((1 - t)Ω)/sin Ω
    z_a + sin(tΩ)/sin Ω z_b, Ω the angle between them; it keeps ‖z‖ near √d where the prior's mass
    is, whereas the linear midpoint shrinks to ≈ √(d/2)), and prints those norms. A conditional GAN
    (§8.5) also gets class_grid.png: one row per class, one column per fixed z (--steps of them),
    so each column shows the same noise rendered as every class.

    VQ-VAE: --codes exports the discrete code indices (safetensors).
    """
    method, trainer = load_method(run_dir, checkpoint=checkpoint, device=device, data_dir=data_dir)
    folder = Path(out_dir) if out_dir else Path(run_dir)
    name = trainer.cfg.method.name
    has_codes = supports(method, ExportsCodes)
    if codes:
        if not has_codes:
            raise ProfondError(f"method {name!r} has no discrete codes to export; drop --codes.")
        if split not in SPLITS:
            raise ProfondError(f"--split {split!r}: use test or train.")
        show(str(method.export_codes(folder / f"codes-{split}.safetensors", split=split, run=str(run_dir))))
        return
    if not supports(method, ExploresLatent):
        hint = " it has discrete codes: use `profond latent RUN --codes`." if has_codes else \
            f" `profond latent` needs {ExploresLatent.needs}."
        raise ProfondError(f"method {name!r} has no vector latent space to explore;{hint}")
    render(method.latent_figures(LatentRequest(
        folder=folder, run_name=Path(run_dir).name, a=a, b=b, steps=steps, pairs=pairs, label=label, dims=dims,
        range=range_, center=center, points=points, seed=seed)))
