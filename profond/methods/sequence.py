"""Sequence models I (course ch. 5-6): text classification and a character language model.

Two methods plug the recurrent models of :mod:`profond.models.rnn` into the one loop:

``text-classifier`` (§5.8: topic classification, language identification)
    Tokenization, fitted on the training texts only and saved as ``RUN/tokenizer.json``:

    * ``method.tokenizer=char`` - one id per character (:class:`~profond.data.tokenize.CharTokenizer`);
      the default (``auto``) for ``fortune-languages``, where spelling is the signal;
    * ``method.tokenizer=bpe`` - byte-level BPE (:class:`~profond.data.tokenize.BPETokenizer`,
      ``method.bpe_vocab`` tokens); the default for ``fortune-topics``: words matter, and
      unlike a word vocabulary BPE has no out-of-vocabulary token.

    Texts are cut to ``method.max_len`` tokens and padded per batch with their lengths
    (``pack_padded_sequence``, §5.8) by :class:`TokenBatches`, a seeded, resumable loader
    (optionally bucketing texts of similar length). Loss: cross-entropy (``L_CE``, §1.3.2).
    Evaluation: accuracy, macro-F1 (mean over the classes of ``2 TP / (2 TP + FP + FN)``,
    the classes being those present in the labels or the predictions, as in scikit-learn's
    ``f1_score(average="macro")``) and the confusion matrix (``profond eval RUN`` draws
    ``confusion.png``). A bag-of-words baseline (TF-IDF + multinomial logistic regression,
    scikit-learn) fitted on the same training split is reported next to the model
    (``baseline_accuracy``, ``baseline_macro_f1``): character 1-3-grams for a char
    tokenizer, words (1-2-grams) for BPE.

``char-lm`` (chapter 5, char-level language model, truncated BPTT §5.3)
    The training text is cut into ``data.batch_size`` contiguous parallel streams read
    ``method.bptt`` characters at a time by :class:`StreamBatches`; the recurrent state is
    carried from one batch to the next and detached (truncated BPTT). The carried state is
    reset at the start of every epoch (each epoch also shifts the streams by a seeded
    offset in ``[0, bptt)``) and, so that a run resumed mid-epoch is exact, it is saved in
    the checkpoints' method state. Loss: mean negative log-likelihood in nats per
    character; evaluation reports bits per character ``bpc = loss / ln 2``, the next-char
    accuracy, and the bpc of two baselines fitted on the training text, measured on the
    very same predicted characters: the add-one smoothed unigram ``p(c) = (n_c + 1) / (N + V)``
    and bigram ``p(c | a) = (n_ac + 1) / (n_a + V)`` (``V`` the tokenizer's vocabulary,
    ``n_a`` the count of ``a`` followed by any character). :meth:`CharLMMethod.generate`
    samples with temperature, top-k and top-p (nucleus) filtering (``profond generate``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..base.coerce import PosInt, Prob, Range
from ..config import RunConfig
from ..contract import Callback, Env, Method, StepContext
from ..data.loader import mix_seed
from ..data.text import END_OF_FORTUNE, CharCorpus, TextClassData
from ..data.tokenize import BPETokenizer, CharTokenizer, Tokenizer, load_tokenizer, pad_batch
from ..errors import CheckpointError, ConfigError, ProfondError
from ..models.transfer import freeze, load_weights
from ..nn.transformer import moe_loss
from ..registry import DATASETS, METHODS, MODELS, check_kwargs
from .capabilities import (
    Artifacts,
    AttentionMaps,
    ExplainsTokens,
    GeneratesText,
    TracesGates,
    check_sampling,
)

TOKENIZER_FILE = "tokenizer.json"
LN2 = math.log(2.0)
#: CharLMMethod.generate samples this many continuations at a time
GENERATE_BATCH = 256


# ----------------------------------------------------------------------------------------
# shared helpers


def _shard(size: int, rank: int, world: int) -> tuple[int, int]:
    """This rank's contiguous ``[lo, hi)`` of ``size`` items (like ``torch.tensor_split``)."""
    base, extra = divmod(size, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def _build_dataset(cfg: RunConfig, options: dict[str, Any], progress: bool, kind: type, hint: str) -> Any:
    """Build ``cfg.data`` (with the method's ``dataset`` options) after checking that its builder
    returns ``kind`` (so that an image dataset is never loaded, or downloaded, by mistake)."""
    d = cfg.data
    ret = getattr(DATASETS.get(d.name), "__annotations__", {}).get("return")
    if ret not in (kind, kind.__name__):
        raise ConfigError(f"data.name={d.name!r} is not {hint}.")
    return DATASETS.build(d.name, data_dir=d.data_dir, download=d.download, progress=progress,
                          **dict(options))


def _check_sizes(cfg: RunConfig, names: Sequence[str]) -> None:
    """``names`` (``vocab_size``, ``num_classes``) come from the data, not from ``model.*``."""
    clash = sorted(set(names) & set(cfg.model.args))
    if clash:
        raise ConfigError(f"model.{clash[0]} is set by the data (tokenizer / classes); drop --set model.{clash[0]}=...")


def _build_model(cfg: RunConfig, **sizes: Any) -> torch.nn.Module:
    """Build ``cfg.model`` with the sizes the data decides (``vocab_size``, ``num_classes``)."""
    _check_sizes(cfg, list(sizes))
    fn = MODELS.get(cfg.model.name)
    try:
        check_kwargs(fn, dict(sizes), f"model {cfg.model.name!r}")
    except ConfigError:
        raise ConfigError(f"model {cfg.model.name!r} does not take a vocabulary ({', '.join(sizes)}); "
                          f"method {cfg.method.name!r} needs a text model (see `profond list models`).") from None
    return MODELS.build(cfg.model.name, **sizes, **cfg.model.args)


class _SaveTokenizer(Callback):
    """Writes the method's tokenizer to ``RUN/tokenizer.json`` (a resumed run checks it)."""

    def __init__(self, method: Any):
        self.method = method

    def on_train_start(self, loop: Any) -> None:
        path = Path(loop.run_dir) / TOKENIZER_FILE
        if path.is_file():
            saved = load_tokenizer(path)
            if saved != self.method.tokenizer:
                raise CheckpointError(
                    f"{path} differs from the tokenizer fitted now on the training data (did the "
                    "installed fortunes change?); resume on the same data or start a new run.")
            return
        self.method.tokenizer.save(path)


def _attach_tokenizer(method: Any, run_dir: str | Path) -> Tokenizer:
    """Load ``run_dir/tokenizer.json`` into ``method`` (the run's own vocabulary)."""
    path = Path(run_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found: the run saved no tokenizer (was it made by `profond train`?).")
    tok = load_tokenizer(path)
    if tok.vocab_size != method.tokenizer.vocab_size:
        raise CheckpointError(f"{path} has {tok.vocab_size} tokens but the model was built for "
                              f"{method.tokenizer.vocab_size}; the data changed since training.")
    method.tokenizer = tok
    return tok


def text_rows(method: Any, split: str) -> list[tuple[str, int]]:
    """``(text, label)`` rows of ``split`` of ``method.data`` (training: the first ``data.subset``)."""
    rows = method.data.split(split)
    if split == "train" and method.cfg.data.subset:
        rows = rows[: method.cfg.data.subset]
    return rows


class TokenizedTexts:
    """What the methods reading a text dataset through a fitted tokenizer share: the training
    texts, the tokenizer saved as ``RUN/tokenizer.json`` and read back by ``attach_run``."""

    def train_texts(self) -> list[str]:
        return [t for t, _ in text_rows(self, "train")]

    def attach_run(self, run_dir: str | Path) -> None:
        """Use the tokenizer saved in ``run_dir`` (``load_run`` / ``profond generate``)."""
        _attach_tokenizer(self, run_dir)

    def callbacks(self) -> list[Any]:
        return [_SaveTokenizer(self)]


def token_loader(method: Any, split: str, seqs: Sequence[Sequence[int]], labels: Tensor, *,
                 shuffle: bool) -> TokenBatches:
    """The :class:`TokenBatches` of a text method: training batches shuffled, bucketed by length
    (``method.bucket``) and sharded over the processes; evaluation batches in order."""
    d, env = method.cfg.data, method.env
    return TokenBatches(
        seqs, labels, batch_size=d.batch_size if shuffle else d.eval_batch_size, shuffle=shuffle,
        seed=method.cfg.train.seed, device=env.device, pad_id=method.tokenizer.pad_id,
        bucket=method.opts.bucket and shuffle, rank=env.rank if shuffle else 0,
        world_size=env.world_size if shuffle else 1, split=split)


# ----------------------------------------------------------------------------------------
# text classification (§5.8)


class TokenBatches:
    """Padded mini-batches ``(tokens (B, T), lengths (B,), labels (B,))`` of token-id lists.

    Like :class:`profond.data.loader.Batches`: epoch ``e``'s order depends on ``(seed, e)``
    only, so ``batches(e, start=k)`` yields exactly batches ``k, k+1, ...`` of the full epoch
    (exact resume). With ``bucket``, the shuffled examples are cut into pools of
    ``bucket_batches`` batches, each pool sorted by length (less padding) and the batch
    order shuffled again. With ``world_size`` W every rank builds the same global batch
    and keeps its contiguous share; a last batch with fewer than W texts is dropped.
    """

    def __init__(self, seqs: Sequence[Sequence[int]], labels: Tensor, *, batch_size: int, shuffle: bool,
                 seed: int = 0, device: str | torch.device = "cpu", pad_id: int = 0, bucket: bool = False,
                 bucket_batches: int = 50, rank: int = 0, world_size: int = 1, split: str = "train"):
        if len(seqs) != len(labels):
            raise ValueError(f"{len(seqs)} texts but {len(labels)} labels")
        if not len(seqs):
            raise ConfigError(f"the {split} split holds no text; use a dataset with more examples.")
        if batch_size < 1 or batch_size % world_size:
            raise ConfigError(f"data.batch_size={batch_size} must be >= 1 and divisible by the world size {world_size}.")
        if any(len(s) == 0 for s in seqs):
            raise ValueError("every text must have at least one token")
        self.seqs = [list(s) for s in seqs]
        self.labels = labels.to(torch.int64)
        self.lengths = torch.tensor([len(s) for s in self.seqs], dtype=torch.int64)
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, int(seed)
        self.device, self.pad_id, self.bucket = torch.device(device), pad_id, bucket
        self.bucket_batches, self.rank, self.world_size, self.split = bucket_batches, rank, world_size, split
        full, rest = divmod(len(self.seqs), self.batch_size)
        self._num_batches = full + (1 if rest >= max(world_size, 1) and rest else 0)
        self.num_samples = sum(hi - lo for lo, hi in (_shard(len(b), rank, world_size) for b in self._plan(0)))

    def __len__(self) -> int:
        return self._num_batches

    def _plan(self, epoch: int) -> list[Tensor]:
        """The index tensors of the epoch's batches (global, before sharding)."""
        n, b = len(self.seqs), self.batch_size
        if not self.shuffle:
            order = torch.arange(n)
            return list(order.split(b))[: self._num_batches]
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        order = torch.randperm(n, generator=g)
        if not self.bucket:
            return list(order.split(b))[: self._num_batches]
        batches: list[Tensor] = []
        for pool in order.split(b * self.bucket_batches):
            pool = pool[torch.argsort(self.lengths[pool], descending=True, stable=True)]
            batches += list(pool.split(b))
        full = [x for x in batches if len(x) == b]
        tail = [x for x in batches if len(x) < b]
        full = [full[i] for i in torch.randperm(len(full), generator=g).tolist()]
        # the partial pieces of the pools are merged into whole batches (+ one last partial)
        rest = torch.cat(tail) if tail else torch.empty(0, dtype=torch.int64)
        out = full + list(rest.split(b))
        return out[: self._num_batches]

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        plan = self._plan(epoch)
        for k in range(start, len(plan)):
            idx = plan[k]
            lo, hi = _shard(len(idx), self.rank, self.world_size)
            idx = idx[lo:hi].tolist()
            tokens, lengths = pad_batch([self.seqs[i] for i in idx], pad_id=self.pad_id)
            yield (tokens.to(self.device), lengths, self.labels[idx].to(self.device))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        return self.batches(0)


def macro_f1(confusion: Tensor | np.ndarray) -> float:
    """Macro-F1 from a confusion matrix (rows: true class, columns: predicted), over the
    classes present in the labels or the predictions (scikit-learn's convention)."""
    c = torch.as_tensor(np.asarray(confusion), dtype=torch.float64)
    tp = c.diag()
    support, predicted = c.sum(1), c.sum(0)
    present = (support + predicted) > 0
    if not present.any():
        return 0.0
    f1 = 2 * tp / (support + predicted).clamp_min(1e-12)  # 2TP / (2TP + FP + FN)
    return float(f1[present].mean())


def bow_baseline(train: Sequence[str], y_train: Sequence[int], analyzer: str, threads: int | None = None) -> Any:
    """Fit the bag-of-words baseline: TF-IDF features (``analyzer``: ``"word"`` 1-2-grams or
    ``"char"`` 1-3-grams within word boundaries) + multinomial logistic regression (C=10)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if analyzer == "char":
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2, sublinear_tf=True)
    else:
        vec = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    pipe = make_pipeline(vec, LogisticRegression(C=10.0, max_iter=1000))
    try:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(limits=threads) if threads else None
    except ImportError:  # pragma: no cover - scikit-learn depends on threadpoolctl
        limit = None
    try:
        pipe.fit(list(train), np.asarray(y_train))
    finally:
        if limit is not None:
            limit.restore_original_limits()
    return pipe


@dataclass
class TextClassifierOptions:
    #: auto (char for fortune-languages, bpe otherwise) | char | bpe
    tokenizer: Literal["auto", "char", "bpe"] = "auto"
    #: vocabulary size of the BPE tokenizer (4 specials + 256 bytes + merges)
    bpe_vocab: Annotated[int, Range(261), "4 specials + 256 bytes + at least 1 merge"] = 2000
    #: texts are cut to this many tokens
    max_len: PosInt = 400
    #: sort pools of shuffled texts by length before batching (less padding)
    bucket: bool = True
    #: ε of label smoothing
    label_smoothing: Annotated[Prob, "0: plain cross-entropy"] = 0.0
    #: fit and report the TF-IDF + logistic-regression baseline on val/test
    baseline: bool = True
    #: keyword options of the dataset builder, e.g. ``{max_per_class: 200}``
    dataset: dict[str, Any] = field(default_factory=dict)
    #: weight of the mixture-of-experts load-balancing loss (models with ``moe_experts``; §7.10)
    moe_weight: Annotated[float, Range(0, 10)] = 0.01


class RecurrentGates(TracesGates):
    """``profond gates``: the gates of the model's LSTM / GRU over a text (exercise 5.4.2). The
    model's ``nn.LSTM`` / ``nn.GRU`` is copied into profond's step-by-step layer, which records
    the gates; one heatmap per gate (hidden units by tokens read) and each gate's mean."""

    def gate_ids(self, text: str) -> list[int]:
        """The token ids the model reads for ``text``."""
        return self.tokenizer.encode(text)

    def gate_figure(self, text: str, path: Path, *, layer: int = 0, units: int | None = None) -> Artifacts:
        from ..models.rnn import GATES, trace_gates
        from ..viz.gates import draw_gates

        if units is not None and units < 1:
            raise ProfondError("--units must be >= 1.")
        ids = self.gate_ids(text)
        if not ids:
            raise ProfondError("the text is empty; give the model something to read.")
        tok, model = self.tokenizer, self.nets["model"]
        labels = [tok.token(i) if hasattr(tok, "token") else tok.decode([i], skip_specials=False) for i in ids]
        traced = trace_gates(model, torch.tensor(ids, device=next(model.parameters()).device), layer=layer)
        title = (f"{model.kind.upper()} layer {layer}"
                 f"{' (forward direction)' if model.rnn.bidirectional else ''}, {len(ids)} tokens: "
                 f"{text[:60]!r}{'…' if len(text) > 60 else ''}")
        png = draw_gates({g: v.numpy() for g, v in traced.items()}, labels, path, title=title, units=units)
        lines = [f"{g}: mean {float(v.mean()):.3f}, per-step mean from {float(v.mean(1).min()):.3f} "
                 f"to {float(v.mean(1).max()):.3f}" for g, v in ((g, traced[g]) for g in GATES[model.kind])]
        return Artifacts(lines=lines, notes=[f"gates.png: {png}"])


@METHODS.register("text-classifier", help="text classification: tokenizer + (Bi)LSTM/GRU or self-attention, "
                  "macro-F1, BoW baseline (§5.8, ch. 6)")
class TextClassifier(TokenizedTexts, Method, RecurrentGates, AttentionMaps, ExplainsTokens):
    """Topic / language classification of fortunes with an ``rnn-classifier`` (§5.8) or an
    ``attn-classifier`` (ch. 6, whose attention maps ``profond attention`` draws)."""

    Options = TextClassifierOptions
    monitor = ("val_accuracy", "max")

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env)
        o = self.opts  # types, choices and ranges: the annotations of TextClassifierOptions
        _check_sizes(cfg, ("vocab_size", "num_classes"))
        self.data: TextClassData = _build_dataset(
            cfg, o.dataset, env.is_main and not cfg.train.quiet, TextClassData,
            "a text classification dataset; use fortune-topics or fortune-languages")
        self.classes = list(self.data.classes)
        self.tokenizer_kind = o.tokenizer if o.tokenizer != "auto" else (
            "char" if self.data.name == "fortune-languages" else "bpe")
        train_texts = self.train_texts()
        init = cfg.model.init_from
        pretrained = Path(init) / TOKENIZER_FILE if init and Path(init).is_dir() else None
        if pretrained is not None and pretrained.is_file():
            # fine-tuning a pretrained run (e.g. a ``bert`` run, §7.6): its vocabulary, not a new one
            self.tokenizer: Tokenizer = load_tokenizer(pretrained)
            self.tokenizer_kind = "char" if isinstance(self.tokenizer, CharTokenizer) else "bpe"
        elif self.tokenizer_kind == "char":
            self.tokenizer = CharTokenizer.fit(train_texts)
        else:
            self.tokenizer = BPETokenizer.train(train_texts, vocab_size=o.bpe_vocab)
        model = _build_model(cfg, vocab_size=self.tokenizer.vocab_size, num_classes=len(self.classes))
        self.init_report = load_weights(model, init, strict=cfg.model.init_strict) if init else None
        if cfg.model.freeze:
            freeze(model, cfg.model.freeze)
        self.nets = {"model": model}
        self._baseline: Any = None
        self._baseline_scores: dict[str, dict[str, float]] = {}
        if with_data:
            self.train_data = self.loader("train", shuffle=True)
            self.val_data = self.loader("val", shuffle=False) if self.data.val else None

    def eval_figures(self, metrics: dict[str, Any], folder: Path, title: str) -> dict[str, Path]:
        from .classification import confusion_figure

        return confusion_figure(metrics, self.classes, folder, title)

    def gate_figure(self, text: str, path: Path, *, layer: int = 0, units: int | None = None) -> Artifacts:
        if not hasattr(self.raw_nets.get("model", self.nets["model"]), "rnn"):
            raise ProfondError(f"this run's model ({self.cfg.model.name}) has no recurrent layer: `profond gates` "
                               "needs an rnn-classifier (kind lstm or gru); for attention use `profond attention`.")
        return super().gate_figure(text, path, layer=layer, units=units)

    def attention_figure(self, text: str, path: Path, *, layer: int | None = None, max_heads: int | None = None,
                         **_: Any) -> Artifacts:
        """``profond attention``: the self-attention weights (eq. 6.9) of every layer (or ``layer``)
        and head over ``text``, one heatmap each (queries by keys, each row sums to 1), and the
        predicted class. A ProfondError naming the fix when the model has no attention."""
        from ..viz.attention import draw_attention_maps

        model = self.raw_nets.get("model", self.nets["model"])
        if not hasattr(model, "attention_maps"):
            raise ProfondError(f"this run's model ({self.cfg.model.name}) has no attention: `profond attention` "
                               "needs a text-classifier run of model attn-classifier (e.g. profond train --recipe "
                               "fortune-topics-attn).")
        ids = self.tokenizer.encode(text)[: self.opts.max_len]
        if not ids:
            raise ProfondError("the text is empty; give the model something to read.")
        device = next(model.parameters()).device
        tokens = torch.tensor([ids], device=device)
        maps = model.attention_maps(tokens)
        if layer is not None:
            if not 0 <= layer < len(maps):
                raise ProfondError(f"--layer {layer}: the model has {len(maps)} attention layer(s), 0 to "
                                   f"{len(maps) - 1}.")
            maps = {k: v for i, (k, v) in enumerate(maps.items()) if i == layer}
        tok = self.tokenizer
        labels = [tok.token(i) if hasattr(tok, "token") else tok.decode([i], skip_specials=False) for i in ids]
        if next(iter(maps.values())).shape[-1] == len(ids) + 1:  # a [CLS] token read first
            labels = ["[CLS]", *labels]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                probs = torch.softmax(model(tokens, torch.tensor([len(ids)], device=device)).float(), -1)[0]
        finally:
            model.train(was_training)
        k = int(probs.argmax())
        heads = next(iter(maps.values())).shape[0]
        title = (f"{self.cfg.model.name}, {len(maps)} layer(s) x {heads} heads, {len(ids)} tokens: "
                 f"{text[:60]!r}{'…' if len(text) > 60 else ''} -> {self.classes[k]} ({float(probs[k]):.2f})")
        png = draw_attention_maps(maps, labels, labels, path, title=title, max_heads=max_heads)
        return Artifacts(lines=[f"predicted: {self.classes[k]} (p = {float(probs[k]):.3f})"],
                         notes=[f"attention: {png}"])

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)[: self.opts.max_len]

    def token_labels(self, ids: list[int]) -> list[str]:
        tok = self.tokenizer
        return [tok.token(i) if hasattr(tok, "token") else tok.decode([i], skip_specials=False) for i in ids]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        out = []
        for t in texts:
            ids = self.tokenizer.encode(t)[: self.opts.max_len]
            out.append(ids or [self.tokenizer.unk_id])  # an empty text reads as one <unk>
        return out

    def loader(self, split: str, *, shuffle: bool) -> TokenBatches:
        rows = text_rows(self, split)
        return token_loader(self, split, self.encode([t for t, _ in rows]),
                            torch.tensor([y for _, y in rows], dtype=torch.int64), shuffle=shuffle)

    def test_data(self) -> TokenBatches:
        return self.loader("test", shuffle=False)

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.data.name, "data_source": self.data.source, "classes": self.classes,
                "tokenizer": self.tokenizer_kind, "vocab_size": self.tokenizer.vocab_size,
                "max_len": self.opts.max_len,
                "train_examples": len(self.train_texts()), "val_examples": len(self.data.val),
                "test_examples": len(self.data.test), "dropped": dict(self.data.dropped),
                "baseline": (f"tf-idf {'char 1-3-grams' if self.tokenizer_kind == 'char' else 'word 1-2-grams'}"
                             " + logistic regression") if self.opts.baseline else None,
                "init_from": (None if self.init_report is None else
                              {"path": self.cfg.model.init_from, "loaded": len(self.init_report.loaded),
                               "skipped": [str(k) for k in self.init_report.skipped]})}

    # -- baseline ----------------------------------------------------------------------------
    def baseline_scores(self, split: str) -> dict[str, float]:
        """Accuracy and macro-F1 of the bag-of-words baseline on ``split`` (cached)."""
        if split not in self._baseline_scores:
            if self._baseline is None:
                rows = self.data.train[: self.cfg.data.subset] if self.cfg.data.subset else self.data.train
                self._baseline = bow_baseline([t for t, _ in rows], [y for _, y in rows],
                                              "char" if self.tokenizer_kind == "char" else "word",
                                              threads=self.cfg.train.threads)
            rows = self.data.split(split)
            y = np.asarray([y for _, y in rows])
            pred = self._baseline.predict([t for t, _ in rows])
            k = len(self.classes)
            conf = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
            self._baseline_scores[split] = {"baseline_accuracy": float((pred == y).mean()),
                                            "baseline_macro_f1": macro_f1(conf)}
        return self._baseline_scores[split]

    # -- training ----------------------------------------------------------------------------
    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        tokens, lengths, y = batch
        logits = self.nets["model"](tokens, lengths)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.opts.label_smoothing)
        out = {"loss": loss.detach(), "accuracy": (logits.detach().argmax(1) == y).float().mean()}
        aux = moe_loss(self.nets["model"])
        if isinstance(aux, Tensor):  # a mixture-of-experts model: balance the experts (§7.10)
            out["moe_balance"] = aux.detach()
            loss = loss + self.opts.moe_weight * aux
        ctx.optimize(loss)
        return out

    @torch.no_grad()
    def predict(self, batches: Any, ctx: StepContext) -> tuple[Tensor, Tensor, float]:
        """``(labels, predictions, summed cross-entropy)`` over ``batches`` in loader order."""
        ys, preds, loss_sum = [], [], 0.0
        for tokens, lengths, y in batches.batches(0):
            with ctx.autocast():
                logits = self.nets["model"](tokens, lengths)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
            ys.append(y.cpu())
            preds.append(logits.argmax(1).cpu())
        return torch.cat(ys), torch.cat(preds), loss_sum

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        k = len(self.classes)
        y, pred, loss_sum = self.predict(batches, ctx)
        confusion = torch.bincount(y * k + pred, minlength=k * k).view(k, k)
        n = len(y)
        out: dict[str, Any] = {"loss": loss_sum / max(n, 1),
                               "accuracy": confusion.diag().sum().item() / max(n, 1),
                               "macro_f1": macro_f1(confusion)}
        split = getattr(batches, "split", None)
        if self.opts.baseline and split in ("val", "test"):
            out.update(self.baseline_scores(split))
        if detailed:
            per_class = confusion.diag().double() / confusion.sum(1).clamp(min=1).double()
            out["per_class_accuracy"] = {c: round(a, 4) for c, a in zip(self.classes, per_class.tolist(), strict=True)}
            out["confusion_matrix"] = confusion.tolist()
            out["examples"] = n
            out["predictions"] = pred.tolist()
        return out


# ----------------------------------------------------------------------------------------
# character language model (ch. 5)


class StreamBatches:
    """Contiguous parallel streams for truncated BPTT: ``(x (B, T), y (B, T), first, last)``.

    The text ``ids`` (from a seeded offset ``o`` in ``[0, offset_max]`` drawn per epoch from
    ``(seed, epoch)``) is cut into ``B`` equal streams of ``n`` characters; batch ``k`` holds
    characters ``kT .. kT+T-1`` of every stream and ``y`` the next ones. Stream ``b`` of batch
    ``k+1`` continues stream ``b`` of batch ``k``, so the recurrent state can be carried.
    ``first`` / ``last`` mark the epoch's first and last batch (reset points). ``n`` does
    not depend on the offset, so every epoch has ``len()`` batches; ``batches(e, start=k)``
    yields batches ``k, ...`` of epoch ``e`` exactly. With ``world_size`` W each rank keeps
    its contiguous share of the ``B`` streams. Without shuffling the offset is 0 and the
    predicted characters are ``ids[1 : B n + 1]`` (:meth:`targets`).
    """

    def __init__(self, ids: Tensor, *, batch_size: int, bptt: int, shuffle: bool, seed: int = 0,
                 device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1, split: str = "train"):
        if bptt < 1 or batch_size < 1:
            raise ConfigError("method.bptt and data.batch_size must be >= 1.")
        if batch_size < world_size:
            raise ConfigError(f"data.batch_size={batch_size} streams cannot be shared by {world_size} processes.")
        self.offset_max = bptt - 1 if shuffle else 0
        n = (len(ids) - 1 - self.offset_max) // batch_size
        if n < 1:
            raise ConfigError(f"the {split} text ({len(ids)} characters) is too short for {batch_size} streams "
                              f"(+{self.offset_max} offset); lower data.batch_size / method.bptt.")
        self.ids = ids.to(torch.int64)
        self.batch_size, self.bptt, self.shuffle, self.seed = batch_size, bptt, shuffle, int(seed)
        self.device, self.rank, self.world_size, self.split = torch.device(device), rank, world_size, split
        self.stream_len = n
        self.lo, self.hi = _shard(batch_size, rank, world_size)
        self.num_samples = (self.hi - self.lo) * n  # characters predicted per epoch by this rank

    def __len__(self) -> int:
        return math.ceil(self.stream_len / self.bptt)

    def offset(self, epoch: int) -> int:
        if not self.offset_max:
            return 0
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return int(torch.randint(0, self.offset_max + 1, (1,), generator=g))

    def streams(self, epoch: int) -> tuple[Tensor, Tensor]:
        o, b, n = self.offset(epoch), self.batch_size, self.stream_len
        x = self.ids[o: o + b * n].view(b, n)[self.lo: self.hi]
        y = self.ids[o + 1: o + b * n + 1].view(b, n)[self.lo: self.hi]
        return x, y

    def targets(self) -> Tensor:
        """The characters predicted in epoch 0 by all streams (``ids[1 : B n + 1]``)."""
        b, n = self.batch_size, self.stream_len
        return self.ids[1: b * n + 1]

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor, bool, bool]]:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        x, y = self.streams(epoch)
        t, last = self.bptt, len(self) - 1
        for k in range(start, len(self)):
            yield (x[:, k * t:(k + 1) * t].to(self.device), y[:, k * t:(k + 1) * t].to(self.device),
                   k == 0, k == last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, bool, bool]]:
        return self.batches(0)


def ngram_bpc(train: Tensor, prev: Tensor, target: Tensor, vocab_size: int) -> dict[str, float]:
    """Bits per character of the add-one smoothed unigram and bigram models fitted on ``train``
    ids, on the characters ``target`` preceded by ``prev`` (same length):
    ``p(c) = (n_c + 1) / (N + V)``, ``p(c | a) = (n_ac + 1) / (n_a + V)`` with ``n_a`` the number
    of training pairs starting with ``a``."""
    v = vocab_size
    train = train.to(torch.int64).cpu()
    uni = torch.bincount(train, minlength=v).double()
    p_uni = (uni + 1) / (uni.sum() + v)
    pairs = torch.bincount(train[:-1] * v + train[1:], minlength=v * v).double().view(v, v)
    p_bi = (pairs + 1) / (pairs.sum(1, keepdim=True) + v)
    target, prev = target.to(torch.int64).cpu(), prev.to(torch.int64).cpu()
    return {"unigram_bpc": float(-torch.log2(p_uni[target]).mean()),
            "bigram_bpc": float(-torch.log2(p_bi[prev, target]).mean())}


def _detach(state: Any) -> Any:
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set to ``-inf`` the logits outside the ``top_k`` largest and outside the nucleus: the
    smallest set of most likely tokens whose probability reaches ``top_p`` (the most likely
    token is always kept, so ``top_p -> 0`` is greedy)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(-1) - probs  # mass of the more likely tokens
        drop_sorted = before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@dataclass
class CharLMOptions:
    #: characters per truncated-BPTT segment (§5.3)
    bptt: PosInt = 128
    #: parallel streams of the val/test evaluation
    eval_streams: PosInt = 32
    #: cut the training text to this many tokens (characters with the char tokenizer; quick runs); null = all
    max_train_chars: Annotated[int, Range(2), "null: all the training text"] | None = None
    #: keyword options of the dataset builder, e.g. ``{files: [computers]}``
    dataset: dict[str, Any] = field(default_factory=dict)
    #: weight of the mixture-of-experts load-balancing loss (models with ``moe_experts``; §7.10)
    moe_weight: Annotated[float, Range(0, 10)] = 0.01
    #: char (one token per character) | bpe (byte-level BPE fitted on the training text)
    tokenizer: Literal["char", "bpe"] = "char"
    #: vocabulary size of the BPE tokenizer (4 specials + 256 bytes + merges)
    bpe_vocab: Annotated[int, Range(261), "4 specials + 256 bytes + at least 1 merge"] = 1000


@METHODS.register("char-lm", help="character language model: truncated BPTT, bits per char vs "
                  "unigram/bigram, sampling (ch. 5)")
class CharLMMethod(Method, GeneratesText, RecurrentGates):
    """Character-level language model trained by truncated BPTT (ch. 5, §5.3), or a Transformer
    LM (``gpt``, §7.7).

    A recurrent model carries its state from one segment of ``bptt`` characters to the next
    (truncated BPTT). A model with ``stateful = False`` (``gpt``) carries nothing: each segment
    is a training window of ``bptt <= model.max_len`` characters, and the evaluation reads the
    text in consecutive windows of ``model.max_len`` characters, each token seeing the
    earlier tokens of its window only (on average half a window of context).
    """

    Options = CharLMOptions
    monitor = ("val_loss", "min")

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env)
        o = self.opts  # types and ranges: the annotations of CharLMOptions
        _check_sizes(cfg, ("vocab_size",))
        self.corpus: CharCorpus = _build_dataset(cfg, o.dataset, env.is_main and not cfg.train.quiet,
                                                 CharCorpus, "a character corpus; use fortune-chars")
        self.tokenizer: Tokenizer = (self.corpus.tokenizer if o.tokenizer == "char" else
                                     BPETokenizer.train(self.corpus.train, vocab_size=o.bpe_vocab))
        self.nets = {"model": _build_model(cfg, vocab_size=self.tokenizer.vocab_size)}
        self.stateful = bool(getattr(self.nets["model"], "stateful", True))
        self.context = getattr(self.nets["model"], "max_len", None)
        if not self.stateful and o.bptt > self.context:
            raise ConfigError(f"method.bptt={o.bptt} is longer than the model's context model.max_len="
                              f"{self.context}: lower method.bptt or raise model.max_len.")
        self.carry: Any = None
        self._encoded: dict[str, Tensor] = {}
        self._baselines: dict[str, dict[str, float]] = {}
        if with_data:
            self.train_data = StreamBatches(self.ids("train"), batch_size=cfg.data.batch_size, bptt=o.bptt,
                                            shuffle=True, seed=cfg.train.seed, device=env.device,
                                            rank=env.rank, world_size=env.world_size, split="train")
            self.val_data = self.eval_loader("val") if len(self.corpus.val) > o.eval_streams else None

    def ids(self, split: str) -> Tensor:
        if split not in self._encoded:
            ids = torch.tensor(self.tokenizer.encode(self.corpus.split(split)), dtype=torch.int64)
            if split == "train" and self.opts.max_train_chars:
                ids = ids[: self.opts.max_train_chars]
            self._encoded[split] = ids
        return self._encoded[split]

    def eval_loader(self, split: str) -> StreamBatches:
        bptt = max(self.opts.bptt, 256) if self.stateful else self.context
        return StreamBatches(self.ids(split), batch_size=self.opts.eval_streams, bptt=bptt,
                             shuffle=False, device=self.env.device, split=split)

    def test_data(self) -> StreamBatches:
        return self.eval_loader("test")

    def attach_run(self, run_dir: str | Path) -> None:
        """Use the tokenizer saved in ``run_dir`` (``load_run`` / ``profond generate``)."""
        _attach_tokenizer(self, run_dir)
        self._encoded.clear()

    def callbacks(self) -> list[Any]:
        return [_SaveTokenizer(self)]

    def describe(self) -> dict[str, Any]:
        c = self.corpus
        return {"dataset": c.name, "data_source": c.source, "vocab_size": self.tokenizer.vocab_size,
                "characters": {s: len(self.ids(s)) for s in ("train", "val", "test")},
                "num_fortunes": dict(c.num_fortunes), "unknown_characters": dict(c.unknown),
                "bptt": self.opts.bptt, "streams": self.cfg.data.batch_size,
                "context": "carried state (truncated BPTT)" if self.stateful else
                f"windows of {self.context} characters (no state carried)"}

    # -- carried state: saved mid-epoch so that resume is exact -------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.carry is None:
            return {}
        parts = self.carry if isinstance(self.carry, tuple) else (self.carry,)
        return {"carry": [p.detach().float().cpu().tolist() for p in parts],
                "carry_tuple": isinstance(self.carry, tuple)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state.get("carry"):
            self.carry = None
            return
        parts = tuple(torch.tensor(p, dtype=torch.float32, device=self.env.device) for p in state["carry"])
        self.carry = parts if state.get("carry_tuple") else parts[0]

    # -- training ----------------------------------------------------------------------------
    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        x, y, first, last = batch
        state = None if first or not self.stateful else self.carry
        logits, state = self.nets["model"](x, state)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        out = {"loss": loss.detach(), ("bpc" if self.opts.tokenizer == "char" else "bits_per_token"): loss.detach() / LN2}
        aux = moe_loss(self.nets["model"])
        if isinstance(aux, Tensor):  # a mixture-of-experts model: balance the experts (§7.10)
            out["moe_balance"] = aux.detach()
            loss = loss + self.opts.moe_weight * aux
        ctx.optimize(loss)
        # truncated BPTT: no gradient across batches; a stateless model carries nothing
        self.carry = None if last or not self.stateful else _detach(state)
        return out

    def chars_per_token(self, loader: StreamBatches) -> float:
        """Characters per predicted token of ``loader``'s targets (1 for the char tokenizer; for
        BPE, the characters of the decoded targets over their number)."""
        if self.opts.tokenizer == "char":
            return 1.0
        key = f"chars:{loader.split}:{loader.batch_size}"
        if key not in self._baselines:
            target = loader.targets()
            self._baselines[key] = {"ratio": len(self.tokenizer.decode(target.tolist())) / max(len(target), 1)}
        return self._baselines[key]["ratio"]

    def baselines(self, loader: StreamBatches) -> dict[str, float]:
        """Unigram and bigram bits per character (per token, divided by characters per token)."""
        key = f"{loader.split}:{loader.batch_size}"
        if key not in self._baselines:
            target = loader.targets()
            prev = loader.ids[: len(target)]
            per_token = ngram_bpc(self.ids("train"), prev, target, self.tokenizer.vocab_size)
            self._baselines[key] = {k: v / self.chars_per_token(loader) for k, v in per_token.items()}
        return self._baselines[key]

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        nats, correct, n = 0.0, 0, 0
        state = None
        for x, y, first, _ in batches.batches(0):
            if first or not self.stateful:
                state = None
            with ctx.autocast():
                logits, state = self.nets["model"](x, state)
            logits = logits.float()
            nats += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            correct += int((logits.argmax(-1) == y).sum())
            n += y.numel()
        loss = nats / max(n, 1)
        out: dict[str, Any] = {"loss": loss, "bpc": loss / LN2, "accuracy": correct / max(n, 1)}
        if isinstance(batches, StreamBatches):
            if self.opts.tokenizer == "bpe":  # bits per character of the text the tokens spell
                out["bits_per_token"] = out["bpc"]
                out["bpc"] = out["bpc"] / self.chars_per_token(batches)
            out.update(self.baselines(batches))
        if detailed:
            out["characters"] = n
            out["unknown_characters"] = self.corpus.unknown.get(getattr(batches, "split", ""), 0)
        return out

    def gate_ids(self, text: str) -> list[int]:
        return self.encode_prompt(text)

    # -- sampling ----------------------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> list[int]:
        """The prompt's ids; a :class:`ProfondError` names the characters outside the vocabulary
        (a byte-level BPE tokenizer has none)."""
        unknown = sorted({c for c in prompt if c not in getattr(self.tokenizer, "stoi", {c: 0 for c in prompt})})
        if unknown:
            raise ProfondError(f"the prompt has characters the model never saw in training: "
                               f"{', '.join(repr(c) for c in unknown)}; remove or replace them.")
        return self.tokenizer.encode(prompt)

    @torch.no_grad()
    def generate(self, prompt: str = "", *, n: int = 1, length: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                 prime: bool = True) -> list[str]:
        """``n`` continuations of ``prompt`` by ``length`` sampled characters each.

        The model first reads ``END_OF_FORTUNE + prompt`` when ``prime`` (a fortune starts
        after the separator in the training streams), then samples one character at a time
        from ``softmax(logits / temperature)`` restricted to the ``top_k`` most likely and to
        the ``top_p`` nucleus; ``temperature=0`` is greedy. Returns ``prompt + continuation``.
        """
        check_sampling(temperature, top_k, top_p)
        if n < 1 or length < 0:
            raise ProfondError("--n must be >= 1 and --length >= 0.")
        ids = self.encode_prompt(prompt)
        context = (self.tokenizer.encode(END_OF_FORTUNE) if prime else []) + ids
        if not context:
            raise ProfondError("give a non-empty --prompt (or keep priming with the fortune separator).")
        model = self.raw_nets.get("model", self.nets["model"])
        model.eval()
        device = next(model.parameters()).device
        texts: list[str] = []
        # GENERATE_BATCH continuations at a time, each batch with its own seed (the first one
        # ``seed``): memory stays bounded whatever ``n``.
        for k, start in enumerate(range(0, n, GENERATE_BATCH)):
            b = min(GENERATE_BATCH, n - start)
            gen = torch.Generator(device=device).manual_seed(int(seed) if k == 0 else int(seed) * 1_000_003 + k)
            logits, state = model(torch.tensor([context] * b, dtype=torch.int64, device=device))
            last = logits[:, -1].float()
            new = torch.empty(b, length, dtype=torch.int64, device=device)
            for t in range(length):
                if temperature == 0:
                    nxt = last.argmax(-1, keepdim=True)
                else:
                    scaled = filter_logits(last / temperature, top_k, top_p)
                    nxt = torch.multinomial(F.softmax(scaled, dim=-1), 1, generator=gen)
                new[:, t:t + 1] = nxt
                logits, state = model(nxt, state)
                last = logits[:, -1].float()
            texts += [prompt + self.tokenizer.decode(row) for row in new.tolist()]
        return texts


__all__ = ["TokenBatches", "StreamBatches", "TextClassifier", "CharLMMethod", "macro_f1", "bow_baseline",
           "ngram_bpc", "filter_logits", "TOKENIZER_FILE"]
