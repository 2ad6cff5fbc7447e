"""``profond explain``: why a trained image classifier predicts what it predicts, as attribution
maps over the image (course §12.5, exercise 12.3; Grad-CAM of exercise 4.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..errors import ProfondError
from .common import (
    CheckpointOpt,
    DataDirOpt,
    DeviceOpt,
    SeedOpt,
    app,
    check_checkpoint,
    examples,
    load_method,
    method_class,
    show,
    user_errors,
)

#: the methods of ``--method``, in the order of the side-by-side panel
METHODS = ("saliency", "smoothgrad", "ig", "gradcam", "occlusion", "shap")
#: the methods of ``--method`` for a text classifier (``all``: both)
TEXT_METHODS = ("saliency", "ig", "all")
#: superpixels of the exact Shapley values: a rows x cols grid (9 groups, 2^9 coalitions)
SHAP_GRID = (3, 3)


def occlusion_window(h: int, w: int) -> tuple[int, int]:
    """Occlusion patch and stride for an ``h × w`` image: a patch of about a seventh of the
    side (4 px on 28 px, 1 px on 8 px), moved by half a patch."""
    patch = max(1, round(min(h, w) / 7))
    return patch, max(1, patch // 2)


def explain_image(model: Any, x: Any, target: int, method: str, *, layer: str | None, seed: int) -> tuple[Any, str]:
    """One method's ``(H, W)`` map of image ``x`` (``(1, C, H, W)``, [0, 1]) for class
    ``target``, and its subtitle."""
    from .. import explain as E
    from ..explain.figures import pixel_map

    if method == "saliency":
        return pixel_map(E.saliency(model, x, target)), "saliency |∂f_c/∂x|"
    if method == "smoothgrad":
        return pixel_map(E.smoothgrad(model, x, target, seed=seed)), "SmoothGrad (25 samples, σ = 0.15)"
    if method == "ig":
        return pixel_map(E.integrated_gradients(model, x, target)), "Integrated Gradients (128 steps)"
    if method == "gradcam":
        return pixel_map(E.gradcam(model, x, target, layer=layer)), f"Grad-CAM ({layer})"
    if method == "occlusion":
        patch, stride = occlusion_window(*x.shape[2:])
        return (pixel_map(E.occlusion(model, x, target, patch=patch, stride=stride)),
                f"occlusion ({patch}x{patch}, stride {stride})")
    rows, cols = SHAP_GRID
    groups = E.grid_groups(x.shape[2], x.shape[3], rows, cols)
    values = E.shapley_image(model, x, groups, target)[0]
    return E.group_map(values, groups).numpy(), f"Shapley ({rows}x{cols} grid, exact)"


@app.command(epilog=examples(
    "profond explain runs/fmnist-cnn-... --index 17 --method gradcam",
    "profond explain RUN --index 0 --method all --out explanations/",
    "profond explain RUN --image shoe.png --method ig --target 7",
    "profond explain RUN --index 3 --method gradcam --layer features.3",
    'profond explain runs/fortune-topics-... --text "The disk is full." --method all   (a text classifier)'))
@user_errors
def explain(
    run_dir: Path = typer.Argument(..., help="A run folder of an image classifier (method classifier)."),
    index: int = typer.Option(None, "--index", help="Explain test image K of the run's dataset."),
    image: Path = typer.Option(None, "--image", help="Explain this image file (PNG/JPG; resized and greyscaled "
                               "to the model's input)."),
    text: str = typer.Option(None, "--text", help="Text-classifier runs: explain this text (token attributions "
                             "as a coloured sentence; --method saliency, ig or all)."),
    method: str = typer.Option(None, "--method", help=f"{', '.join(METHODS)} or all (one PNG per method and "
                               "a side-by-side of them); default: gradcam (text: all)."),
    target: int = typer.Option(None, "--target", help="Class to explain (default: the predicted class)."),
    layer: str = typer.Option(None, "--layer", help="Grad-CAM: the conv layer, named as in named_modules() "
                              "(default: the last conv layer)."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Folder of the PNGs (default: RUN/explain)."),
    seed: SeedOpt = 0,
    checkpoint: CheckpointOpt = "last",
    device: DeviceOpt = "cpu",
    data_dir: DataDirOpt = None,
) -> None:
    """Attribution maps of a trained image classifier over one image (course §12.5).

    saliency |∂f_c/∂x_i| (§12.5.1); SmoothGrad (the mean saliency of noisy copies);
    Integrated Gradients from a black image (128-step trapezoid; the maps sum to
    f_c(x) − f_c(0)); Grad-CAM ReLU(Σ_k α^c_k A^k) on a conv layer (§12.5.2); occlusion (the
    drop of f_c when a patch turns black); exact Shapley values of a 3x3 grid of patches
    (§12.5.3). f_c is the logit of the explained class. Writes one overlay PNG per method
    (red: raises the class score, blue: lowers it) and prints the paths.

    A text classifier (--text) gets, per token, the saliency ‖∂f_c/∂e_t‖ and the Integrated
    Gradients of its embedding e_t from the zero embedding, drawn as a coloured sentence.
    """
    from ..explain import conv_layer, last_conv_layer
    from ..methods.capabilities import ExplainsImages, ExplainsTokens, supports

    check_checkpoint(checkpoint)
    if method is not None and method not in (*METHODS, "all"):
        raise ProfondError(f"--method {method!r}: use one of {', '.join(METHODS)} or all.")
    given = [f for f, v in (("--index", index), ("--image", image), ("--text", text)) if v is not None]
    if len(given) != 1:
        raise ProfondError("pass one of --index K (a test image) or --image FILE.png (--text TEXT for a text "
                           f"classifier){'' if not given else ', not ' + ' and '.join(given)}.")
    if index is not None and index < 0:
        raise ProfondError(f"--index {index}: use 0 or more.")
    if image is not None and not Path(image).is_file():
        raise ProfondError(f"--image {str(image)!r}: no such file; pass a PNG or JPG (or --index K for a test image).")
    if layer is not None and method not in (None, "gradcam", "all"):
        raise ProfondError(f"--layer is Grad-CAM's: add --method gradcam (or all), or drop --layer {layer}.")
    cfg, cls = method_class(run_dir)
    if supports(cls, ExplainsTokens):
        if text is None:
            raise ProfondError(f"{run_dir} is a text-classifier run: pass --text TEXT (not {given[0]}).")
        method = method or "all"
        if method not in TEXT_METHODS:
            raise ProfondError(f"--method {method}: a text classifier takes {', '.join(TEXT_METHODS)}.")
        return explain_text(run_dir, text, method, target, out_dir, checkpoint=checkpoint, device=device,
                            data_dir=data_dir)
    if not supports(cls, ExplainsImages):
        raise ProfondError(f"{run_dir} is a {cfg.method.name!r} run ({cfg.model.name}); `profond explain` needs "
                           f"{ExplainsImages.needs} or {ExplainsTokens.needs}.")
    method = method or "gradcam"
    if text is not None:
        raise ProfondError(f"--text is for text-classifier runs; {run_dir} classifies images: pass --index K or "
                           "--image FILE.png.")
    run, _ = load_method(run_dir, checkpoint=checkpoint, device=device, data_dir=data_dir)

    import torch

    model = run.pixel_model().to(run.env.device).eval()
    if index is not None:
        x, what = run.test_image(index)
        stem = f"test{index}"
    else:
        from ..data.inputs import read_image

        x = read_image(Path(image), run.image_shape(), invert=False, flag="--image")
        what, stem = f"{image}", Path(image).stem
    x = x.to(run.env.device)
    k = len(run.classes)
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    pred = int(probs.argmax())
    if target is not None and not 0 <= target < k:
        raise ProfondError(f"--target {target}: the model has {k} classes; use 0..{k - 1}.")
    tgt = pred if target is None else int(target)

    todo = list(METHODS) if method == "all" else [method]
    notes: list[str] = []
    if "gradcam" in todo:
        net = run.raw_nets["model"]
        try:
            name = last_conv_layer(net) if layer is None else layer
            conv_layer(net, name)
        except ValueError as e:
            if method == "all" and layer is None:
                todo.remove("gradcam")
                notes.append(f"Grad-CAM skipped: {e}")
                name = None
            else:
                raise ProfondError(f"--layer: {e}" if layer is not None else f"--method gradcam: {e}") from None
        else:
            layer = "net." + name
            notes.append(f"Grad-CAM layer: {name}" + (" (the last conv layer)" if name == last_conv_layer(net) else ""))

    show(f"image: {what}")
    show(f"predicted: {run.classes[pred]} (class {pred}, p = {float(probs[pred]):.3f}); explained: "
         f"{run.classes[tgt]} (class {tgt}){'' if target is not None else ', the predicted class'}")
    for note in notes:
        show(note)
    from ..explain.figures import SIGNED, save_overlay, save_panel

    folder = Path(out_dir) if out_dir is not None else Path(run_dir) / "explain"
    folder.mkdir(parents=True, exist_ok=True)
    maps: dict[str, tuple[Any, str]] = {}
    paths = []
    title = f"{stem}: class {run.classes[tgt]} (predicted {run.classes[pred]})"
    for m in todo:
        heat, sub = explain_image(model, x, tgt, m, layer=layer, seed=seed)
        sub = sub.replace("net.", "", 1)
        maps[m] = (heat, sub)
        paths.append(save_overlay(folder / f"{stem}-{m}.png", x[0], heat, signed=m in SIGNED,
                                  title=f"{sub}\n{title}"))
    if method == "all":
        paths.append(save_panel(folder / f"{stem}-all.png", x[0], maps, title=title))
    for p in paths:
        show(str(p))


def explain_text(run_dir: Path, text: str, method: str, target: int | None, out_dir: Path | None, *,
                 checkpoint: str, device: str, data_dir: str | None) -> None:
    """``profond explain RUN --text TEXT``: per-token saliency and Integrated Gradients of a
    text classifier, one coloured sentence per method in one PNG."""
    import re

    import torch

    from ..explain.figures import save_token_figure
    from ..explain.text import (
        embedding_layer,
        embedding_scores,
        token_integrated_gradients,
        token_saliency,
    )

    run, _ = load_method(run_dir, checkpoint=checkpoint, device=device, data_dir=data_dir)
    model = run.raw_nets["model"].eval()
    ids = run.token_ids(text)
    if not ids:
        raise ProfondError("--text is empty; give the model something to read.")
    try:
        embedding_layer(model)
    except ValueError as e:
        raise ProfondError(f"--text: {e}") from None
    tokens = torch.tensor(ids, device=run.env.device)
    labels = run.token_labels(ids)
    probs = embedding_scores(model, tokens).float().softmax(-1)
    k = len(run.classes)
    pred = int(probs.argmax())
    if target is not None and not 0 <= target < k:
        raise ProfondError(f"--target {target}: the model has {k} classes; use 0..{k - 1}.")
    tgt = pred if target is None else int(target)
    show(f"text: {text[:80]!r}{'…' if len(text) > 80 else ''} ({len(ids)} tokens)")
    show(f"predicted: {run.classes[pred]} (class {pred}, p = {float(probs[pred]):.3f}); explained: "
         f"{run.classes[tgt]} (class {tgt}){'' if target is not None else ', the predicted class'}")
    rows = {}
    if method in ("saliency", "all"):
        rows["saliency ‖∂f_c/∂e_t‖"] = (labels, token_saliency(model, tokens, tgt).cpu().numpy())
    if method in ("ig", "all"):
        ig = token_integrated_gradients(model, tokens, tgt)
        delta = float(embedding_scores(model, tokens)[tgt] - embedding_scores(model, tokens, zero=True)[tgt])
        show(f"Integrated Gradients: Σ_t IG_t = {float(ig.sum()):.4f}, f_c(e) − f_c(0) = {delta:.4f}")
        rows["Integrated Gradients (from e = 0, 128 steps)"] = (labels, ig.cpu().numpy())
    folder = Path(out_dir) if out_dir is not None else Path(run_dir) / "explain"
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9]+", "-", text.strip())[:32].strip("-") or "text"
    path = save_token_figure(folder / f"text-{stem}-{method}.png", rows,
                             title=f"class {run.classes[tgt]} (predicted {run.classes[pred]}, p = {float(probs[pred]):.2f})")
    show(str(path))
