r"""Masked-language-model pretraining (course §7.6, def. 7.10, eq. 7.13): ``mlm``.

BERT's objective on the texts of a text-classification dataset (``fortune-topics`` or
``fortune-languages``; the labels are not read)::

    x = [CLS] t_1 … t_n                     [CLS] is the tokenizer's <bos> (id 2)
    M ⊂ {1 … n}, each position with probability 15 %                       (def. 7.10)
    x̃_i = [MASK] (80 %), a random token (10 %), x_i (10 %),   i ∈ M
    L_MLM = - (1/|M|) Σ_{i ∈ M} log p(x_i | x̃)                            (7.13)

* Tokenizer: char or BPE fitted on the training texts with a ``<mask>`` special after the
  usual four (``RUN/tokenizer.json``); a ``text-classifier`` run with ``model.init_from=RUN``
  reads this tokenizer and the encoder's weights (fine-tuning, §7.6).
* The masks of training step ``k`` come from a generator seeded by ``(train.seed, k)``: a
  resumed run draws the same ones. Evaluation masks are drawn from a fixed seed, so the val
  and test numbers of two runs compare.
* Metrics: ``loss`` (eq. 7.13, nats per masked token), ``accuracy`` of the argmax on the masked
  positions, and ``unigram_loss``, the loss of predicting every masked token by its training
  frequency (the baseline the model must beat).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base.coerce import Prob, Range
from ..config import RunConfig
from ..contract import Env, Method, StepContext
from ..data.loader import mix_seed
from ..data.text import TextClassData
from ..data.tokenize import SPECIALS, BPETokenizer, CharTokenizer, Tokenizer
from ..errors import ConfigError
from ..registry import METHODS
from .sequence import (
    TokenBatches,
    TokenizedTexts,
    _build_dataset,
    _build_model,
    text_rows,
    token_loader,
)

__all__ = ["MASK", "MLMMethod", "mask_tokens"]

#: the [MASK] special token, id 4 (after <pad>, <unk>, <bos>, <eos>)
MASK = "<mask>"
#: seed of the evaluation masks
EVAL_SEED = 1234


def mask_tokens(tokens: Tensor, lengths: Tensor, *, mask_id: int, vocab_size: int, first_normal: int,
                generator: torch.Generator, mask_prob: float = 0.15, p_mask: float = 0.8,
                p_random: float = 0.1) -> tuple[Tensor, Tensor]:
    """BERT's corruption (def. 7.10): ``(inputs x̃ (B, T), targets (B, T))``, targets ``-100``
    outside ``M``. Position 0 ([CLS]) and padding are never chosen; every row with a token
    gets at least one masked position. Random replacements are drawn among the ordinary
    tokens ``first_normal … vocab_size-1``."""
    b, t = tokens.shape
    dev = tokens.device
    pos = torch.arange(t, device=dev)[None]
    eligible = (pos >= 1) & (pos < lengths.to(dev)[:, None])  # (B, T)
    u = torch.rand(b, t, generator=generator, device=dev)
    chosen = eligible & (u < mask_prob)
    # a row with eligible positions but none chosen: take its eligible position of smallest u
    empty = eligible.any(1) & ~chosen.any(1)
    if bool(empty.any()):
        first = torch.where(eligible, u, 2.0).argmin(1)
        chosen[empty, first[empty]] = True
    targets = torch.where(chosen, tokens, torch.full_like(tokens, -100))
    r = torch.rand(b, t, generator=generator, device=dev)
    random_ids = torch.randint(first_normal, vocab_size, (b, t), generator=generator, device=dev)
    inputs = torch.where(chosen & (r < p_mask), torch.full_like(tokens, mask_id), tokens)  # 80 %: [MASK]
    inputs = torch.where(chosen & (r >= p_mask) & (r < p_mask + p_random), random_ids, inputs)  # 10 %: random
    return inputs, targets  # the other 10 %: unchanged


@dataclass
class MLMOptions:
    #: char | bpe
    tokenizer: Literal["char", "bpe"] = "bpe"
    #: vocabulary size of the BPE tokenizer (5 specials + 256 bytes + merges)
    bpe_vocab: Annotated[int, Range(262), "5 specials + 256 bytes + at least 1 merge"] = 2000
    #: tokens per text, [CLS] included
    max_len: Annotated[int, Range(2)] = 128
    #: share of the positions predicted (|M| / n)
    mask_prob: Annotated[float, Range(0, 1, lo_open=True)] = 0.15
    #: of the chosen positions, share replaced by [MASK]
    p_mask: Prob = 0.8
    #: of the chosen positions, share replaced by a random token (the rest stay unchanged)
    p_random: Prob = 0.1
    #: sort pools of shuffled texts by length before batching (less padding)
    bucket: bool = True
    #: keyword options of the dataset builder, e.g. ``{max_per_class: 200}``
    dataset: dict[str, Any] = field(default_factory=dict)


@METHODS.register("mlm", help="masked-language-model pretraining (BERT, §7.6): 15% of tokens, 80/10/10")
class MLMMethod(TokenizedTexts, Method):
    """BERT pretraining on the texts of a text-classification dataset (see the module docstring)."""

    Options = MLMOptions
    monitor = ("val_loss", "min")

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env)
        o = self.opts
        if o.p_mask + o.p_random > 1.0:
            raise ConfigError(f"method.p_mask + method.p_random = {o.p_mask + o.p_random:g} must be <= 1.")
        self.data: TextClassData = _build_dataset(
            cfg, o.dataset, env.is_main and not cfg.train.quiet, TextClassData,
            "a text dataset; use fortune-topics or fortune-languages")
        specials = (*SPECIALS, MASK)
        texts = self.train_texts()
        if o.tokenizer == "char":
            self.tokenizer: Tokenizer = CharTokenizer.fit(texts, specials=specials)
        else:
            self.tokenizer = BPETokenizer.train(texts, vocab_size=o.bpe_vocab, specials=specials)
        self.nets = {"model": _build_model(cfg, vocab_size=self.tokenizer.vocab_size)}
        self._unigram: Tensor | None = None
        if with_data:
            self.train_data = self.loader("train", shuffle=True)
            self.val_data = self.loader("val", shuffle=False) if self.data.val else None

    @property
    def mask_id(self) -> int:
        return self.tokenizer.specials.index(MASK)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """``[CLS] t_1 … t_n`` (``<bos>`` first), cut to ``method.max_len`` tokens."""
        tok = self.tokenizer
        return [[tok.bos_id, *tok.encode(t)[: self.opts.max_len - 1]] for t in texts]

    def loader(self, split: str, *, shuffle: bool) -> TokenBatches:
        rows = text_rows(self, split)
        return token_loader(self, split, self.encode([t for t, _ in rows]), torch.zeros(len(rows), dtype=torch.int64),
                            shuffle=shuffle)

    def test_data(self) -> TokenBatches:
        return self.loader("test", shuffle=False)

    def describe(self) -> dict[str, Any]:
        o = self.opts
        return {"dataset": self.data.name, "data_source": self.data.source, "tokenizer": o.tokenizer,
                "vocab_size": self.tokenizer.vocab_size, "mask_id": self.mask_id, "max_len": o.max_len,
                "masking": f"{o.mask_prob:.0%} of tokens: {o.p_mask:.0%} [MASK], {o.p_random:.0%} random, "
                           f"{1 - o.p_mask - o.p_random:.0%} unchanged",
                "train_texts": len(self.train_texts()), "val_texts": len(self.data.val)}

    def _mask(self, tokens: Tensor, lengths: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        o = self.opts
        return mask_tokens(tokens, lengths, mask_id=self.mask_id, vocab_size=self.tokenizer.vocab_size,
                           first_normal=len(self.tokenizer.specials), generator=gen, mask_prob=o.mask_prob,
                           p_mask=o.p_mask, p_random=o.p_random)

    def unigram(self) -> Tensor:
        """``log p(token)`` of the training tokens (add-one), the baseline of ``unigram_loss``."""
        if self._unigram is None:
            counts = torch.ones(self.tokenizer.vocab_size, dtype=torch.float64)
            for seq in self.encode(self.train_texts()):
                counts += torch.bincount(torch.tensor(seq[1:], dtype=torch.int64),
                                         minlength=len(counts)).double()
            self._unigram = (counts / counts.sum()).log().float()
        return self._unigram

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        tokens, lengths, _ = batch
        gen = torch.Generator(device=tokens.device).manual_seed(mix_seed(self.cfg.train.seed, ctx.step))
        inputs, targets = self._mask(tokens, lengths, gen)
        logits = self.nets["model"](inputs, lengths).float()  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)  # (7.13)
        ctx.optimize(loss)
        sel = targets != -100
        acc = (logits.detach().argmax(-1)[sel] == targets[sel]).float().mean()
        return {"loss": loss.detach(), "accuracy": acc}

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        gen = torch.Generator(device=self.env.device).manual_seed(EVAL_SEED)
        uni = self.unigram().to(self.env.device)
        nats = uni_nats = 0.0
        correct = n = 0
        for tokens, lengths, _ in batches.batches(0):
            inputs, targets = self._mask(tokens, lengths, gen)
            with ctx.autocast():
                logits = self.nets["model"](inputs, lengths)
            logits = logits.float()
            sel = targets != -100
            gold = targets[sel]
            nats += F.cross_entropy(logits[sel], gold, reduction="sum").item()
            uni_nats += float(-uni[gold].sum())
            correct += int((logits[sel].argmax(-1) == gold).sum())
            n += int(sel.sum())
        out: dict[str, Any] = {"loss": nats / max(n, 1), "accuracy": correct / max(n, 1),
                               "unigram_loss": uni_nats / max(n, 1)}
        if detailed:
            out["masked_tokens"] = n
        return out
