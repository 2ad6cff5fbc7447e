r"""Runs made from pretrained Hugging Face checkpoints: ``pretrained-lm`` and ``pretrained-mlm``.

``profond import-hf DIR`` (:mod:`profond.cli.hf`) turns a GPT-2 or BERT checkpoint (``config.json`` +
``model.safetensors``, mapped by :mod:`profond.models.hf`) into a profond run folder, as if
profond had trained it: ``config.yaml`` (model ``gpt`` or ``bert`` with the checkpoint's sizes,
method ``pretrained-lm`` or ``pretrained-mlm``), ``checkpoints/step_00000000/`` in the usual
safetensors + JSON format, ``summary.json`` (what was imported, and notes such as a fresh MLM
head) and, when the folder holds one, the profond ``tokenizer.json``. Everything is written
into a hidden folder beside the run, renamed into place at the end: a run appears whole or not
at all. :func:`profond.train.load_run` loads it like any run; its ``model`` net is the profond
``gpt`` (``idx (B, T) -> (logits (B, T, V), state)``, eq. 7.14) or ``bert``
(``tokens (B, T) -> logits (B, T, V)``, eq. 7.13).

The two methods hold weights and train nothing: they have no dataset (``profond train`` and
``profond eval`` refuse them, saying what to do instead). ``pretrained-lm`` generates text
(:class:`~.capabilities.GeneratesText`, ``profond generate``) when the run has a profond
tokenizer: it reads the prompt (``<bos>`` for an empty prompt), then samples one token at a
time from ``softmax(logits / T)`` within the top-k and the top-p nucleus, reading only the new
token at each step through the model's KV cache (§6.10); ``T = 0`` is greedy, the choice of
``transformers``' ``generate(do_sample=False)``.

``profond export-hf RUN DIR`` writes any run whose model is a ``gpt`` or ``bert`` that GPT-2 /
BERT can express (:func:`~profond.models.hf.profond_to_gpt2`) as a Hugging Face folder
(``GPT2LMHeadModel`` / ``BertForMaskedLM``), with the run's ``tokenizer.json`` beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import RunConfig
from ..contract import Env, Method
from ..data.tokenize import Tokenizer, load_tokenizer
from ..errors import CheckpointError, ConfigError, ProfondError
from ..registry import METHODS, MODELS
from .capabilities import GeneratesText, check_sampling
from .sequence import GENERATE_BATCH, TOKENIZER_FILE, filter_logits

__all__ = ["PretrainedLM", "PretrainedMLM", "sample_ids"]


@dataclass
class PretrainedOptions:
    """No option: the weights are all there is (the source folder is in ``summary.json``)."""


class _Pretrained(Method):
    """Imported weights: the ``model`` net only, no data, no training."""

    Options = PretrainedOptions
    #: the profond model this method holds
    model_name: ClassVar[str] = ""
    #: the methods with data that train such a model (named in the error of ``profond train``)
    finetune_with: ClassVar[str] = ""

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env)
        name = cfg.method.name
        if cfg.model.name != self.model_name:
            raise ConfigError(f"method {name!r} holds a {self.model_name} model, not {cfg.model.name!r}; "
                              f"set model.name={self.model_name} (profond import-hf writes such runs).")
        if with_data:
            raise ConfigError(f"method {name!r} holds imported weights and has no training data; to fine-tune them, "
                              f"train {self.finetune_with} with --set model.init_from=RUN (a model of the same "
                              "sizes and vocabulary).")
        self.nets = {"model": MODELS.build(cfg.model.name, **cfg.model.args)}
        self.tokenizer: Tokenizer | None = None
        self.run_dir: Path | None = None

    def attach_run(self, run_dir: str | Path) -> None:
        """Read the run's profond ``tokenizer.json`` when it has one."""
        self.run_dir = Path(run_dir)
        path = self.run_dir / TOKENIZER_FILE
        if path.is_file():
            tok = load_tokenizer(path)
            vocab = self.nets["model"].body.tok_embedding.num_embeddings
            if tok.vocab_size > vocab:
                raise CheckpointError(f"{path} has {tok.vocab_size} tokens but the model reads {vocab}: it is not "
                                      "this model's tokenizer; remove it or put the right one there.")
            self.tokenizer = tok

    def test_data(self) -> Any:
        raise ProfondError(f"{self.run_dir or 'this run'} holds imported weights (method {self.cfg.method.name!r}) and "
                           "no dataset, so `profond eval` has nothing to measure; fine-tune it on a dataset "
                           "(--set model.init_from=RUN) and evaluate that run.")

    def describe(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer is not None}


@METHODS.register("pretrained-mlm", help="an imported BERT masked LM (profond import-hf): weights only, no data")
class PretrainedMLM(_Pretrained):
    """A BERT checkpoint imported by ``profond import-hf`` (model ``bert``)."""

    model_name = "bert"
    finetune_with = "mlm (or text-classifier)"


@torch.no_grad()
def sample_ids(model: nn.Module, context: list[int], *, n: int = 1, length: int = 20, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, seed: int = 0) -> Tensor:
    """``(n, length)`` token ids continuing ``context`` by a ``gpt`` model with its KV cache.

    Each step samples from ``softmax(logits / temperature)`` within the ``top_k`` and ``top_p``
    filters (``temperature=0``: argmax) and feeds the new token alone with the cache. Batches of
    :data:`~.sequence.GENERATE_BATCH` rows, the first seeded by ``seed``: the same seed, the
    same ids.
    """
    check_sampling(temperature, top_k, top_p)
    if not context:
        raise ProfondError("the context is empty: give at least one token to continue.")
    model.eval()
    device = next(model.parameters()).device
    out = []
    for k, start in enumerate(range(0, n, GENERATE_BATCH)):
        b = min(GENERATE_BATCH, n - start)
        gen = torch.Generator(device=device).manual_seed(int(seed) if k == 0 else int(seed) * 1_000_003 + k)
        logits, state = model(torch.tensor([context] * b, dtype=torch.int64, device=device))  # (B, T, V)
        new = torch.empty(b, length, dtype=torch.int64, device=device)
        for t in range(length):
            last = logits[:, -1].float()  # (B, V)
            if temperature == 0:
                nxt = last.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(F.softmax(filter_logits(last / temperature, top_k, top_p), -1), 1,
                                        generator=gen)
            new[:, t:t + 1] = nxt
            if t + 1 < length:
                logits, state = model(nxt, state)  # (B, 1, V): the new token only (§6.10)
        out.append(new.cpu())
    return torch.cat(out)


@METHODS.register("pretrained-lm", help="an imported GPT-2 language model (profond import-hf): generates text")
class PretrainedLM(_Pretrained, GeneratesText):
    """A GPT-2 checkpoint imported by ``profond import-hf`` (model ``gpt``); generates text with
    the run's profond tokenizer."""

    model_name = "gpt"
    finetune_with = "char-lm"

    def encode_prompt(self, prompt: str) -> list[int]:
        """The prompt's ids (``<bos>`` alone for an empty prompt); ProfondError without a tokenizer
        or for characters a character tokenizer does not know."""
        tok = self.tokenizer
        if tok is None:
            raise ProfondError(f"{self.run_dir or 'this run'} has no profond {TOKENIZER_FILE}, so its text cannot be "
                               "turned into token ids: put the profond tokenizer the model was trained with there "
                               "(export-hf / import-hf carry it along).")
        stoi = getattr(tok, "stoi", None)
        if stoi is not None:
            unknown = sorted({c for c in prompt if c not in stoi})
            if unknown:
                raise ProfondError(f"the prompt has characters outside the run's vocabulary: "
                                   f"{', '.join(repr(c) for c in unknown)}; remove or replace them.")
        return tok.encode(prompt) or [tok.bos_id]

    def generate(self, prompt: str = "", *, n: int = 1, length: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0) -> list[str]:
        """``n`` texts: ``prompt`` + ``length`` sampled tokens (see :func:`sample_ids`)."""
        check_sampling(temperature, top_k, top_p)
        if n < 1 or length < 0:
            raise ProfondError("--n must be >= 1 and --length >= 0.")
        context = self.encode_prompt(prompt)
        model = self.raw_nets.get("model", self.nets["model"])
        ids = sample_ids(model, context, n=n, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                         seed=seed)
        return [prompt + self.tokenizer.decode(row) for row in ids.tolist()]
