"""The text commands: ``profond generate`` (continue a prompt), ``profond gates`` (recurrent
gates over a text) and ``profond translate`` (text to text, with attention maps)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ProfondError
from ..methods.capabilities import (
    AttentionMaps,
    GeneratesText,
    TracesGates,
    TranslatesText,
    check_sampling,
    supports,
)
from .common import (
    CheckpointOpt,
    DataDirOpt,
    DeviceOpt,
    app,
    check_checkpoint,
    examples,
    load_method,
    no_capability,
    render,
    require,
    show,
    user_errors,
)

SEPARATOR = "\n" + "-" * 40 + "\n"
#: the most tokens one ``profond generate`` writes (--n x --length): ten million characters
#: of a character model, already more text than a console or an editor shows
MAX_GENERATE_TOKENS = 10_000_000
#: memory and disk allowed per generated token: its text (a BPE token is several characters,
#: UTF-8 up to 4 bytes each), the Python copies and the joined file
BYTES_PER_TOKEN = 32


@app.command(epilog=examples(
    'profond generate runs/char-lm-fortune-chars-20261122-101500 --prompt "The "',
    "profond generate RUN --prompt Linux --temperature 0.8 --top-p 0.9 --n 3 --length 300 --seed 1",
    'profond generate RUN --prompt "A " --temperature 0   (greedy)'))
@user_errors
def generate(
    run_dir: Path = typer.Argument(..., help="A run folder of a language model (e.g. model char-lm)."),
    prompt: str = typer.Option("", "--prompt", "-p", help="Text to continue (every character must be in the "
                               "run's vocabulary)."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="Softmax temperature (> 0; 0 = greedy)."),
    top_k: int = typer.Option(None, "--top-k", help="Sample among the K most likely tokens only."),
    top_p: float = typer.Option(None, "--top-p", help="Nucleus sampling: among the smallest set of most likely "
                                "tokens whose probability reaches P (in (0, 1])."),
    n: int = typer.Option(1, "--n", help="Number of samples."),
    length: int = typer.Option(200, "--length", "-l", help="Tokens generated after the prompt."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Folder for generated.txt (default: the run folder)."),
    checkpoint: CheckpointOpt = "last",
    device: DeviceOpt = "cpu",
    data_dir: DataDirOpt = None,
) -> None:
    """Sample text from a language model (chapter 5): writes generated.txt and prints it.

    The model reads its start-of-text context then the prompt, and samples each next token
    from softmax(logits / T), restricted to the --top-k most likely and to the --top-p nucleus.
    """
    from ..base.io import atomic_write_text
    from ..base.limits import check_count, check_fits

    check_checkpoint(checkpoint)
    check_sampling(temperature, top_k, top_p)
    if n < 1 or length < 0:
        raise ProfondError("--n must be >= 1 and --length >= 0.")
    folder = Path(out_dir) if out_dir else Path(run_dir)
    check_count(n * max(length, 1), MAX_GENERATE_TOKENS, f"--n {n:,} x --length {length:,} (tokens to generate)",
                "lower --n or --length")
    nbytes = n * (length * BYTES_PER_TOKEN + 2 * len(prompt.encode()) + len(SEPARATOR))
    check_fits(nbytes, f"--n {n:,} texts of --length {length:,}", "lower --n or --length", disk=folder)
    require(run_dir, "generate", GeneratesText)
    method, _ = load_method(run_dir, checkpoint=checkpoint, device=device, data_dir=data_dir)
    texts = method.generate(prompt, n=n, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                            seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "generated.txt"
    atomic_write_text(path, SEPARATOR.join(texts) + "\n")
    show(SEPARATOR.join(texts))
    show(f"generated.txt: {path}", stderr=True)


@app.command(epilog=examples(
    'profond gates runs/fortune-char-lstm "Unix is a four-letter word."',
    'profond gates RUN "The quick brown fox" --units 32 --out gates.png',
    'profond gates runs/fortune-lang-bigru "Das ist ein Test" --layer 0'))
@user_errors
def gates(
    run_dir: Path = typer.Argument(..., help="A run folder of a char-lm or text-classifier model with an LSTM or GRU."),
    text: str = typer.Argument(..., help="The text the model reads."),
    out_png: Path = typer.Option(None, "--out", "-o", help="PNG to write (default: RUN/gates.png)."),
    layer: int = typer.Option(0, "--layer", help="Recurrent layer to trace (0 = the one reading the embeddings)."),
    units: int = typer.Option(None, "--units", help="Draw the first N hidden units only (default: all)."),
    checkpoint: CheckpointOpt = "last",
    device: DeviceOpt = "cpu",
    data_dir: DataDirOpt = None,
) -> None:
    """Draw a trained LSTM's forget / input / output gates (a GRU's reset / update gates) over a text.

    Course exercise 5.4.2: one heatmap per gate, hidden units by tokens read, forward
    direction of --layer; prints each gate's mean. The model's nn.LSTM / nn.GRU is copied
    into profond's step-by-step layer, which records the gates.
    """
    check_checkpoint(checkpoint)
    if units is not None and units < 1:
        raise ProfondError("--units must be >= 1.")
    require(run_dir, "gates", TracesGates)
    method, _ = load_method(run_dir, checkpoint=checkpoint, device=device, data_dir=data_dir)
    path = Path(out_png) if out_png else Path(run_dir) / "gates.png"
    render(method.gate_figure(text, path, layer=layer, units=units))


@app.command(epilog=examples(
    'profond translate runs/numbers-fr-attention "deux mille vingt-six"',
    'profond translate RUN "soixante et onze" "cent un" --beam 4',
    'profond translate RUN "trois cent quatre-vingt-dix-sept" --attention-png attention.png'))
@user_errors
def translate(
    run_dir: Path = typer.Argument(..., help="A run folder of a model that translates text (e.g. recipe "
                                   "numbers-fr-attention)."),
    texts: list[str] = typer.Argument(..., help="Inputs to translate (French number words, or digits for a "
                                      "digits2words run)."),
    beam: int = typer.Option(1, "--beam", "-k", help="Beam width (1 = greedy decoding)."),
    attention_png: Path = typer.Option(None, "--attention-png", help="Write the attention heatmap (source x "
                                       "output tokens) of the first input to this PNG (attention models only)."),
    checkpoint: CheckpointOpt = "last",
    device: DeviceOpt = "cpu",
) -> None:
    """Translate with a seq2seq run (course §6.1-6.3): prints one output per input.

    With --attention-png, also draws the attention weights of the first input (rows: output
    characters then the end-of-sequence token, columns: source characters; each row sums to 1); the PNG keeps the
    matrix as JSON in its "attention" text chunk.
    """
    check_checkpoint(checkpoint)
    if beam < 1:
        raise ProfondError(f"--beam {beam}: use an integer >= 1 (1 = greedy).")
    require(run_dir, "translate", TranslatesText)
    method, _ = load_method(run_dir, checkpoint=checkpoint, device=device)
    if attention_png is not None and not supports(method, AttentionMaps):
        raise no_capability(method, "translate --attention-png", AttentionMaps, hint=": drop --attention-png")
    figure = method.attention_figure(texts[0], attention_png, beam=beam) if attention_png is not None else None
    for o in method.translate_texts(list(texts), beam=beam):
        show(o)
    if figure is not None:
        render(figure)
