"""Sequence models I (course §6.1-6.3, exercise 6.1): seq2seq on French numbers.

``seq2seq`` trains the encoder-decoder of :mod:`profond.models.seq2seq` (with or without
attention) to translate French number words into digits (``method.direction=words2digits``,
``"deux mille vingt-six" -> "2026"``) or back (``digits2words``), on the ``french-numbers``
dataset whose val / test numbers never occur in training.

* Tokenization: one character tokenizer per side, fitted on the training pairs only
  (``data.subset=N``: a seeded sample of N of them, spread over all numbers) and saved as
  ``RUN/src_tokenizer.json`` and ``RUN/tgt_tokenizer.json`` (``attach_run`` reloads them).
  Targets are wrapped as ``<bos> y_1 ... y_T <eos>``; the decoder reads ``<bos> y_1 ... y_T``
  and predicts ``y_1 ... y_T <eos>``.
* Batches: :class:`PairBatches` (a :class:`~profond.methods.sequence.TokenBatches` whose
  labels are the pair indices, so the seeded, resumable, bucketed order is shared) yields
  ``(src (B, S), src_lengths (B,), tgt (B, T+2), index (B,))``.
* Loss: cross-entropy over the target tokens, padding ignored.
* Teacher forcing (scheduled sampling, Bengio et al. 2015): at training step ``k`` (0-based,
  read from the loop's step counter, so a resumed run continues the schedule exactly) the
  decoder reads the true previous token with probability
  ``p_k = start + (end - start) * min(k / (K - 1), 1)`` (``K`` the run's number of steps),
  otherwise its own previous argmax; the coin flips come from a generator seeded by
  ``(train.seed, k)``. ``start = end = 1`` is plain teacher forcing.
* Gradient clipping: the loop's ``train.clip_grad_norm``.
* Evaluation: ``loss`` (nats per target token, teacher forced), ``token_accuracy``
  (teacher-forced argmax), ``exact_match`` of the greedy decoding (``method.beam > 1``: beam
  search) and ``majority_token_accuracy`` (always predicting the most frequent training
  target token; the baseline a model must beat). ``detailed=True`` adds
  ``exact_match_by_length`` (input length in number words for words2digits, in digits for
  digits2words, as :meth:`FrenchNumbers.input_lengths`), the count per length and the first
  ten predictions.
* :meth:`Seq2SeqMethod.translate` - outputs and attention matrices for new inputs
  (``profond translate RUN "deux mille vingt-six" --attention-png a.png``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base.coerce import NonNegInt, PosInt, Range
from ..config import RunConfig
from ..contract import Callback, Env, Method, StepContext
from ..data.loader import mix_seed
from ..data.text import FrenchNumbers
from ..data.tokenize import CharTokenizer, load_tokenizer, pad_batch
from ..errors import CheckpointError, ConfigError, ProfondError
from ..registry import METHODS
from .capabilities import Artifacts, AttentionMaps, TranslatesText
from .sequence import TokenBatches, _build_dataset, _build_model

SRC_TOKENIZER_FILE = "src_tokenizer.json"
TGT_TOKENIZER_FILE = "tgt_tokenizer.json"


class PairBatches(TokenBatches):
    """:class:`TokenBatches` of the sources, with the targets looked up by pair index:
    yields ``(src (B, S), src_lengths (B,), tgt (B, T), index (B,))``, ``tgt`` padded."""

    def __init__(self, src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], **kw: Any):
        if len(src) != len(tgt):
            raise ValueError(f"{len(src)} sources but {len(tgt)} targets")
        super().__init__(src, torch.arange(len(src)), **kw)
        self.targets = [list(t) for t in tgt]

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        for src, lengths, idx in super().batches(epoch, start):
            tgt, _ = pad_batch([self.targets[i] for i in idx.tolist()], pad_id=self.pad_id)
            yield src, lengths, tgt.to(self.device), idx


def teacher_forcing_at(step: int, total_steps: int, start: float, end: float) -> float:
    """``p_k = start + (end - start) * min(k / (K - 1), 1)``: ``start`` at step 0, ``end`` at
    the last step ``K - 1`` (and after it)."""
    if total_steps <= 1:
        return float(end if step > 0 else start)
    frac = min(max(step, 0) / (total_steps - 1), 1.0)
    return float(start + (end - start) * frac)


class _SaveTokenizers(Callback):
    """Writes the source / target tokenizers to the run folder (a resumed run checks them)."""

    def __init__(self, method: Seq2SeqMethod):
        self.method = method

    def on_train_start(self, loop: Any) -> None:
        for name, tok in self.method.tokenizer_files().items():
            path = Path(loop.run_dir) / name
            if path.is_file():
                if load_tokenizer(path) != tok:
                    raise CheckpointError(f"{path} differs from the tokenizer fitted now on the training pairs; "
                                          "resume on the same data (data.subset, method.dataset) or start a new run.")
            else:
                tok.save(path)


@dataclass
class Seq2SeqOptions:
    #: words2digits ("vingt et un" -> "21") | digits2words (profond.data.text.DIRECTIONS)
    direction: Literal["words2digits", "digits2words"] = "words2digits"
    #: probability of reading the true previous token at the first training step
    teacher_forcing_start: Annotated[float, Range(0, 1), "a probability"] = 1.0
    #: ... and at the last one (linear in between; 1 and 1 = plain teacher forcing)
    teacher_forcing_end: Annotated[float, Range(0, 1), "a probability"] = 1.0
    #: evaluation decoding: 1 = greedy, K > 1 = beam search with K hypotheses
    beam: Annotated[PosInt, "1: greedy"] = 1
    #: GNMT length penalty alpha of the beam search (0 = raw log-probability)
    length_penalty: Annotated[float, Range(0), "0: raw log-probability"] = 0.0
    #: most tokens decoded; 0 = the longest training target + 10
    max_output_len: Annotated[NonNegInt, "0: the longest training target + 10"] = 0
    #: sort pools of shuffled pairs by source length before batching (less padding)
    bucket: bool = True
    #: keyword options of the dataset builder, e.g. ``{n_train: 5000}``
    dataset: dict[str, Any] = field(default_factory=dict)


@METHODS.register("seq2seq", help="seq2seq French number words <-> digits: scheduled teacher forcing, "
                  "exact match, beam search, attention maps (§6.1-6.3)")
class Seq2SeqMethod(Method, TranslatesText, AttentionMaps):
    """Encoder-decoder translation of French numbers (exercise 6.1)."""

    Options = Seq2SeqOptions
    monitor = ("val_exact_match", "max")

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env)
        o = self.opts  # types, choices and ranges: the annotations of Seq2SeqOptions
        self.data: FrenchNumbers = _build_dataset(
            cfg, o.dataset, env.is_main and not cfg.train.quiet, FrenchNumbers,
            "a translation dataset; use french-numbers")
        train = self.pairs("train")
        self.src_tokenizer = CharTokenizer.fit(s for s, _ in train)
        self.tgt_tokenizer = CharTokenizer.fit(t for _, t in train)
        self.nets = {"model": _build_model(cfg, src_vocab=self.src_tokenizer.vocab_size,
                                           tgt_vocab=self.tgt_tokenizer.vocab_size)}
        if not getattr(self.nets["model"], "supports_scheduled_sampling", True) and (
                o.teacher_forcing_start, o.teacher_forcing_end) != (1.0, 1.0):
            raise ConfigError(f"model {cfg.model.name} trains with plain teacher forcing only: set "
                              "method.teacher_forcing_start=1 and method.teacher_forcing_end=1.")
        longest = max((len(t) for _, t in train), default=1)
        self.max_output_len = o.max_output_len or longest + 11  # + <eos> + margin
        self._majority = self._majority_token(train)
        self.total_steps: int | None = None
        if with_data:
            self.train_data = self.loader("train", shuffle=True)
            self.val_data = self.loader("val", shuffle=False) if self.data.val else None
            steps = len(self.train_data) * cfg.train.epochs
            if cfg.train.max_steps is not None:
                steps = min(steps, cfg.train.max_steps)
            self.total_steps = steps

    # -- data --------------------------------------------------------------------------------
    def _keep(self, split: str, n: int) -> list[int] | None:
        """Indices kept by ``data.subset`` (train only): a seeded sample, in number order
        (the pairs are sorted by number, so the first ``subset`` would be the smallest)."""
        k = self.cfg.data.subset
        if split != "train" or not k or k >= n:
            return None
        g = torch.Generator().manual_seed(mix_seed(self.cfg.train.seed, n, k))
        return sorted(torch.randperm(n, generator=g)[:k].tolist())

    def pairs(self, split: str) -> list[tuple[str, str]]:
        rows = self.data.pairs(split, self.opts.direction)
        keep = self._keep(split, len(rows))
        return rows if keep is None else [rows[i] for i in keep]

    def input_lengths(self, split: str) -> list[int]:
        """Input length of each pair of :meth:`pairs` (number words, or digits for digits2words)."""
        lengths = self.data.input_lengths(split, self.opts.direction)
        keep = self._keep(split, len(lengths))
        return lengths if keep is None else [lengths[i] for i in keep]

    def _majority_token(self, train: list[tuple[str, str]]) -> int:
        counts: Counter[int] = Counter()
        for _, t in train:
            counts.update(self.tgt_tokenizer.encode(t, eos=True))
        return counts.most_common(1)[0][0] if counts else self.tgt_tokenizer.eos_id

    def loader(self, split: str, *, shuffle: bool) -> PairBatches:
        rows = self.pairs(split)
        d, env = self.cfg.data, self.env
        src = [self.src_tokenizer.encode(s) or [self.src_tokenizer.unk_id] for s, _ in rows]
        tgt = [self.tgt_tokenizer.encode(t, bos=True, eos=True) for _, t in rows]
        return PairBatches(src, tgt, batch_size=d.batch_size if shuffle else d.eval_batch_size, shuffle=shuffle,
                           seed=self.cfg.train.seed, device=env.device, pad_id=self.tgt_tokenizer.pad_id,
                           bucket=self.opts.bucket and shuffle, rank=env.rank if shuffle else 0,
                           world_size=env.world_size if shuffle else 1, split=split)

    def test_data(self) -> PairBatches:
        return self.loader("test", shuffle=False)

    def tokenizer_files(self) -> dict[str, CharTokenizer]:
        return {SRC_TOKENIZER_FILE: self.src_tokenizer, TGT_TOKENIZER_FILE: self.tgt_tokenizer}

    def attach_run(self, run_dir: str | Path) -> None:
        """Use the tokenizers saved in ``run_dir`` (``load_run`` / ``profond translate``)."""
        loaded = {}
        for name, tok in self.tokenizer_files().items():
            path = Path(run_dir) / name
            if not path.is_file():
                raise CheckpointError(f"{path} not found: the run saved no tokenizer (was it made by `profond train`?).")
            saved = load_tokenizer(path)
            if not isinstance(saved, CharTokenizer) or saved.vocab_size != tok.vocab_size:
                raise CheckpointError(f"{path} does not match the model ({tok.vocab_size} tokens); the data changed.")
            loaded[name] = saved
        self.src_tokenizer, self.tgt_tokenizer = loaded[SRC_TOKENIZER_FILE], loaded[TGT_TOKENIZER_FILE]

    def callbacks(self) -> list[Any]:
        return [_SaveTokenizers(self)]

    def describe(self) -> dict[str, Any]:
        o = self.opts
        return {"dataset": "french-numbers", "direction": o.direction,
                "src_vocab": self.src_tokenizer.vocab_size, "tgt_vocab": self.tgt_tokenizer.vocab_size,
                "train_pairs": len(self.pairs("train")), "val_pairs": len(self.data.val),
                "test_pairs": len(self.data.test), "max_output_len": self.max_output_len,
                "teacher_forcing": [o.teacher_forcing_start, o.teacher_forcing_end],
                "eval_decoding": "greedy" if o.beam == 1 else f"beam {o.beam}"}

    # -- training ----------------------------------------------------------------------------
    def teacher_forcing(self, step: int) -> float:
        """The teacher-forcing probability of (0-based) training step ``step``."""
        o = self.opts
        return teacher_forcing_at(step, self.total_steps or 1, o.teacher_forcing_start, o.teacher_forcing_end)

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        src, src_len, tgt, _ = batch
        p = self.teacher_forcing(ctx.step)
        gen = None
        if p < 1.0:
            gen = torch.Generator(device=src.device).manual_seed(mix_seed(self.cfg.train.seed, ctx.step))
        logits = self.nets["model"](src, src_len, tgt[:, :-1], p, gen).logits.float()
        gold = tgt[:, 1:]
        pad = self.tgt_tokenizer.pad_id
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1), ignore_index=pad)
        ctx.optimize(loss)
        valid = gold != pad
        acc = ((logits.detach().argmax(-1) == gold) & valid).sum() / valid.sum().clamp_min(1)
        return {"loss": loss.detach(), "token_accuracy": acc, "teacher_forcing": torch.tensor(p)}

    # -- decoding ----------------------------------------------------------------------------
    def _model(self) -> Any:
        return self.raw_nets.get("model", self.nets["model"])

    def decode(self, src: Tensor, src_len: Tensor, beam: int | None = None) -> Any:
        """Greedy (``beam`` 1) or beam-search :class:`~profond.models.seq2seq.Decoded` outputs."""
        model, t = self._model(), self.tgt_tokenizer
        beam = self.opts.beam if beam is None else beam
        kw = {"max_len": self.max_output_len, "bos": t.bos_id, "eos": t.eos_id}
        if beam == 1:
            return model.greedy_decode(src, src_len, **kw)
        return model.beam_search(src, src_len, beam=beam, length_penalty=self.opts.length_penalty, **kw)

    def _text(self, tokens: Sequence[int], length: int) -> str:
        """The decoded string: the tokens before ``<eos>`` (specials dropped)."""
        ids = [int(i) for i in tokens[:length]]
        if ids and ids[-1] == self.tgt_tokenizer.eos_id:
            ids = ids[:-1]
        return self.tgt_tokenizer.decode(ids)

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        model = self.nets["model"]
        pad = self.tgt_tokenizer.pad_id
        nats, correct, majority, tokens, exact, n = 0.0, 0, 0, 0, 0, 0
        hits: list[bool] = []
        preds: list[str] = []
        order: list[int] = []
        for src, src_len, tgt, idx in batches.batches(0):
            gold = tgt[:, 1:]
            with ctx.autocast():
                logits = model(src, src_len, tgt[:, :-1]).logits
            logits = logits.float()
            valid = gold != pad
            nats += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1), ignore_index=pad,
                                    reduction="sum").item()
            correct += int(((logits.argmax(-1) == gold) & valid).sum())
            majority += int(((gold == self._majority) & valid).sum())
            tokens += int(valid.sum())
            out = self.decode(src, src_len)
            for row, length, ref, ref_len in zip(out.tokens.tolist(), out.lengths.tolist(), gold.tolist(),
                                                 valid.sum(1).tolist(), strict=True):
                text = self._text(row, length)
                ok = text == self._text(ref, ref_len)
                hits.append(ok)
                preds.append(text)
            order += idx.tolist()
            n += len(src)
        exact = sum(hits)
        res: dict[str, Any] = {"loss": nats / max(tokens, 1), "token_accuracy": correct / max(tokens, 1),
                               "exact_match": exact / max(n, 1),
                               "majority_token_accuracy": majority / max(tokens, 1)}
        if detailed:
            split = getattr(batches, "split", None)
            res["examples"] = n
            if split in ("train", "val", "test"):
                all_lengths = self.input_lengths(split)
                by: dict[int, list[bool]] = {}
                for k, ok in zip((all_lengths[i] for i in order), hits, strict=True):
                    by.setdefault(k, []).append(ok)
                res["exact_match_by_length"] = {str(k): sum(v) / len(v) for k, v in sorted(by.items())}
                res["count_by_length"] = {str(k): len(v) for k, v in sorted(by.items())}
                rows = self.pairs(split)
                res["sample_predictions"] = [{"input": rows[i][0], "target": rows[i][1], "output": p}
                                             for i, p in zip(order[:10], preds[:10], strict=True)]
        return res

    # -- inference ----------------------------------------------------------------------------
    def encode_inputs(self, texts: Sequence[str]) -> list[list[int]]:
        """Source ids; a :class:`ProfondError` names empty inputs and unknown characters."""
        out = []
        for text in texts:
            if not text:
                raise ProfondError("an input is empty; give a number in words (or digits for digits2words).")
            unknown = sorted({c for c in text if c not in self.src_tokenizer.stoi})
            if unknown:
                raise ProfondError(f"{text!r} has characters the model never saw in training: "
                                   f"{', '.join(repr(c) for c in unknown)}; known: "
                                   f"{''.join(self.src_tokenizer.chars)!r}.")
            out.append(self.src_tokenizer.encode(text))
        return out

    @torch.no_grad()
    def translate(self, texts: Sequence[str], beam: int = 1) -> tuple[list[str], list[Tensor | None]]:
        """Translate ``texts``: the outputs and, for attention models, each one's attention
        matrix ``(output tokens incl. <eos>, source characters)`` (rows sum to 1)."""
        if beam < 1:
            raise ProfondError(f"--beam {beam}: use an integer >= 1 (1 = greedy).")
        ids = self.encode_inputs(texts)
        model = self._model()
        model.eval()
        device = next(model.parameters()).device
        src, src_len = pad_batch(ids, pad_id=self.src_tokenizer.pad_id)
        out = self.decode(src.to(device), src_len, beam=beam)
        texts_out, attn = [], []
        for i, (row, length) in enumerate(zip(out.tokens.tolist(), out.lengths.tolist(), strict=True)):
            texts_out.append(self._text(row, length))
            attn.append(None if out.attention is None else out.attention[i, :length, : len(ids[i])].float().cpu())
        return texts_out, attn

    def output_tokens(self, text: str, attention_rows: int) -> list[str]:
        """Labels of the attention rows: the output characters, then ``<eos>`` if decoded."""
        labels = list(text)
        return (labels + [self.tgt_tokenizer.itos[self.tgt_tokenizer.eos_id]])[:attention_rows]

    # -- capabilities: `profond translate` ------------------------------------------------------
    def translate_texts(self, texts: list[str], *, beam: int = 1) -> list[str]:
        return self.translate(texts, beam=beam)[0]

    def attention_figure(self, text: str, path: Path, *, beam: int = 1, **_: Any) -> Artifacts:
        """The attention weights of the translation of ``text`` (rows: output characters then
        the end-of-sequence token, columns: source characters; each row sums to 1); the PNG
        keeps the matrix as JSON in its "attention" text chunk."""
        if getattr(self.raw_nets.get("model", self.nets["model"]), "attention", None) is None:
            raise ProfondError(f"this run has no attention (model.attention={self.cfg.model.args.get('attention')}): "
                               "train one with --set model.attention=bahdanau (or drop --attention-png).")
        outputs, attention = self.translate([text], beam=beam)
        labels = self.output_tokens(outputs[0], attention[0].shape[0])
        png = draw_attention(attention[0], text, labels, path,
                             title=f"{text} -> {outputs[0]}" + (f" (beam {beam})" if beam > 1 else ""))
        return Artifacts(notes=[f"attention: {png}"])


def draw_attention(matrix: Tensor, source: str, target: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Heatmap of ``α_{t,j}`` (rows: output tokens, columns: source characters), saved as a
    PNG that also stores the matrix as JSON in its ``attention`` text chunk."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = matrix.detach().float().cpu().numpy()
    rows, cols = m.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.28 * cols + 1.5), max(2.5, 0.35 * rows + 1.2)))
    im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(cols), [("␣" if c == " " else c) for c in source], fontsize=8)
    ax.set_yticks(range(rows), list(target), fontsize=8)
    ax.set_xlabel("source characters")
    ax.set_ylabel("output tokens")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"attention": json.dumps({"source": source, "target": list(target), "matrix": m.tolist()})}
    fig.savefig(path, dpi=110, metadata=meta)
    plt.close(fig)
    return path


__all__ = ["Seq2SeqMethod", "PairBatches", "teacher_forcing_at", "draw_attention", "SRC_TOKENIZER_FILE",
           "TGT_TOKENIZER_FILE"]
