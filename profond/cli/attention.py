"""``profond attention``: the attention weights of a trained model over a text, as heatmaps
(course ch. 6, eq. 6.9)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ProfondError
from ..methods.capabilities import AttentionMaps
from .common import (
    CheckpointOpt,
    DataDirOpt,
    DeviceOpt,
    app,
    check_checkpoint,
    examples,
    load_method,
    render,
    require,
    user_errors,
)


@app.command(epilog=examples(
    'profond attention runs/fortune-topics-attn "The computer is down again."',
    'profond attention RUN "Das ist ein Test" --layer 1 --heads 2 --out attention.png',
    'profond attention runs/numbers-fr-attention "deux mille vingt-six"   (a seq2seq run)'))
@user_errors
def attention(
    run_dir: Path = typer.Argument(..., help="A run folder of a model with attention (an attn-classifier "
                                   "text-classifier run, or a seq2seq run with attention)."),
    text: str = typer.Argument(..., help="The text the model reads."),
    out_png: Path = typer.Option(None, "--out", "-o", help="PNG to write (default: RUN/attention.png)."),
    layer: int = typer.Option(None, "--layer", help="Draw this attention layer only (0 = the first; default: "
                              "all layers). For models with several attention layers."),
    heads: int = typer.Option(None, "--heads", help="Draw the first N heads of each layer only (default: all)."),
    checkpoint: CheckpointOpt = "last",
    device: DeviceOpt = "cpu",
    data_dir: DataDirOpt = None,
) -> None:
    """Draw a trained model's attention weights over a text (course ch. 6, eq. 6.9).

    One heatmap per layer and head: row i is the query token, column j the key token, cell (i, j)
    the weight softmax_j(q_i . k_j / sqrt(d_k)); each row sums to 1. A text classifier also prints
    its predicted class; a seq2seq run draws its decoder's attention over the source characters.
    Prints where the PNG is.
    """
    check_checkpoint(checkpoint)
    if layer is not None and layer < 0:
        raise ProfondError(f"--layer {layer}: use 0 or more (0 = the first attention layer).")
    if heads is not None and heads < 1:
        raise ProfondError(f"--heads {heads}: use 1 or more (or leave it out for every head).")
    require(run_dir, "attention", AttentionMaps)
    method, _ = load_method(run_dir, checkpoint=checkpoint, device=device, data_dir=data_dir)
    path = Path(out_png) if out_png else Path(run_dir) / "attention.png"
    render(method.attention_figure(text, path, layer=layer, max_heads=heads))
