r"""Hugging Face GPT-2 and BERT checkpoints <-> profond ``gpt`` and ``bert`` (course §7.6, §7.7).

A Hugging Face checkpoint is a folder with ``config.json`` (the sizes) and
``model.safetensors`` (the tensors; or ``model.safetensors.index.json`` and its shards). This
module only maps names, layouts and options, in both directions; it never imports
``transformers`` and never unpickles: ``config.json`` is read with :mod:`json`, the tensors
with :func:`safetensors.torch.load_file` (a header and raw bytes). A folder holding only
``pytorch_model.bin`` (a pickle) is refused with the command that converts it.

GPT-2 (``GPT2LMHeadModel``, or ``GPT2Model`` without the ``transformer.`` prefix) -> ``gpt``::

    wte, wpe                         body.tok_embedding, body.pos_embedding   (learned P, §7.3)
    h.l.ln_1, h.l.ln_2, ln_f          blocks.l.norm1, blocks.l.norm2, body.final_norm  (Pre-Norm, 7.10)
    h.l.attn.c_attn  (d, 3d)          [W^Q | W^K | W^V]: transposed and cut in three    (6.13)
    h.l.attn.c_proj  (d, d)           W^O, transposed                                   (6.14)
    h.l.mlp.c_fc, c_proj              W_1, W_2 of eq. 7.8, transposed
    lm_head (tied to wte)             lm_head (tied to body.tok_embedding)              (7.14)

GPT-2's ``Conv1D`` stores its weight as ``(in, out)`` (``y = x W + b``), ``nn.Linear`` as
``(out, in)`` (``y = x Wᵀ + b``): every matrix is transposed. ``activation_function``
``gelu_new`` (and ``gelu_pytorch_tanh``) is the tanh approximation of GELU (``gelu_tanh``),
``layer_norm_epsilon`` is ``norm_eps``.

BERT (``BertForMaskedLM``, or ``BertModel`` without the ``bert.`` prefix) -> ``bert``
(Post-Norm, eq. 7.9; MLM head, eq. 7.13)::

    embeddings.{word,position,token_type}_embeddings   body.{tok,pos,type}_embedding
    embeddings.LayerNorm                                body.embed_norm
    encoder.layer.l.attention.self.{query,key,value}    blocks.l.attn.{q,k,v}_proj
    encoder.layer.l.attention.output.dense / LayerNorm  blocks.l.attn.out_proj / blocks.l.norm1
    encoder.layer.l.intermediate.dense                  blocks.l.ffn.fc1
    encoder.layer.l.output.dense / LayerNorm            blocks.l.ffn.fc2 / blocks.l.norm2
    cls.predictions.transform.dense / LayerNorm         mlm_transform / mlm_norm
    cls.predictions.decoder (tied) + cls.predictions.bias   mlm_decoder (tied) and its bias

BERT's ``hidden_act: gelu`` is the exact GELU, ``layer_norm_eps`` is ``norm_eps``,
``type_vocab_size`` is ``type_vocab``. [CLS] is a vocabulary token (``cls_token=False``). A
checkpoint without the MLM head (``BertModel``) gets a fresh one: ``mlm_transform``
``N(0, 0.02²)`` (seed 0), its LayerNorm at (1, 0), the decoder tied to the embedding with a zero
bias; :func:`bert_to_profond` says so in its notes. The pooler and the next-sentence head are
not part of ``bert``: they are left out, with a note.

Export (:func:`profond_to_gpt2`, :func:`profond_to_bert`) refuses, naming the option, a model
that GPT-2 / BERT cannot express: positions other than learned (rope, alibi, sinusoidal,
none), SwiGLU, RMSNorm, a mixture of experts, grouped-query attention, no biases, linear or
local attention, a learned [CLS] vector, Pre-Norm BERT, a BERT activation other than GELU.
Weight tying is kept as it is (``tie_word_embeddings``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["CONFIG_FILE", "MODEL_TYPES", "WEIGHTS_FILE", "bert_to_profond", "from_hf", "gpt2_to_profond", "hf_kind",
           "profond_to_bert", "profond_to_gpt2", "read_hf_folder", "to_hf", "write_hf_folder"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
#: ``model_type`` of config.json -> the profond model it becomes and the method of the run
#: ``profond import-hf`` makes of it (weights only: :mod:`profond.methods.pretrained`)
MODEL_TYPES = {"gpt2": ("gpt", "pretrained-lm"), "bert": ("bert", "pretrained-mlm")}
#: GPT-2's ``activation_function`` -> the FFN activation it computes; only exact equivalents
GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
#: what export writes for each activation
GPT2_ACTIVATION_NAMES = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
#: the standard deviation of a fresh MLM transform (BERT's ``initializer_range``)
INIT_STD = 0.02
CONVERT_HINT = ("convert it to safetensors first: in Python, load it with transformers' "
                "AutoModel.from_pretrained(DIR) and write it back with save_pretrained(DIR, "
                "safe_serialization=True)")


# ----------------------------------------------------------------------------------------
# the folder


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder; pass a Hugging Face checkpoint folder "
                          "(config.json + model.safetensors).")
    if not path.is_file():
        raise ConfigError(f"{folder} has no {CONFIG_FILE}: it is not a Hugging Face checkpoint folder; pass the "
                          "folder save_pretrained wrote (config.json + model.safetensors).")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); pass the config.json save_pretrained wrote.") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} holds a {type(config).__name__}, not a JSON object of options.")
    return config


def hf_kind(config: dict[str, Any], where: str = CONFIG_FILE) -> str:
    """``"gpt2"`` or ``"bert"``: the ``model_type`` of ``config``, else ConfigError."""
    kind = config.get("model_type")
    if kind not in MODEL_TYPES:
        arch = config.get("architectures")
        shown = f" (architectures {arch})" if arch else ""
        raise ConfigError(f"{where}: model_type {kind!r}{shown} is not a GPT-2 or BERT checkpoint; "
                          "profond imports model_type gpt2 (GPT2LMHeadModel, GPT2Model) and bert "
                          "(BertForMaskedLM, BertModel) only.")
    return kind


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        if isinstance(e, OSError) and e.filename is not None:
            raise
        raise ConfigError(f"{path} is not a valid safetensors file ({e}); write it again with "
                          "save_pretrained(DIR, safe_serialization=True).") from None


def read_hf_folder(folder: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(config, tensors)`` of a Hugging Face GPT-2 / BERT checkpoint folder.

    Reads ``config.json`` and ``model.safetensors`` (or the shards named by
    ``model.safetensors.index.json``); ConfigError for a folder without ``config.json``, of
    another ``model_type``, or holding pickles only (``pytorch_model.bin``: never loaded).
    """
    folder = Path(folder)
    config = _read_config(folder)
    hf_kind(config, str(folder / CONFIG_FILE))
    single, index = folder / WEIGHTS_FILE, folder / INDEX_FILE
    if single.is_file():
        return config, _load_safetensors(single)
    if index.is_file():
        try:
            names = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(names.values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"{index} is not a safetensors index ({e!r}); write the checkpoint again with "
                              "save_pretrained(DIR, safe_serialization=True).") from None
        tensors: dict[str, Tensor] = {}
        for shard in shards:
            if not isinstance(shard, str) or Path(shard).name != shard or not shard.endswith(".safetensors"):
                raise ConfigError(f"{index} names the shard {shard!r}: a shard is a .safetensors file "
                                  "beside the index.")
            if not (folder / shard).is_file():
                raise ConfigError(f"{folder / shard} is missing (named by {index.name}); copy every shard.")
            tensors.update(_load_safetensors(folder / shard))
        return config, tensors
    pickles = [p for p in PICKLES if (folder / p).is_file()]
    if pickles:
        raise ConfigError(f"{folder} holds {pickles[0]}, a pickle, which profond never loads (it can run code); "
                          f"{CONVERT_HINT}.")
    raise ConfigError(f"{folder} has no {WEIGHTS_FILE}: pass the folder save_pretrained(DIR, "
                      "safe_serialization=True) wrote.")


def write_hf_folder(folder: str | Path, config: dict[str, Any], tensors: dict[str, Tensor],
                    extra_files: tuple[Path, ...] = ()) -> list[Path]:
    """Write the new folder ``folder``: ``config.json``, ``model.safetensors`` (float32) and a
    copy of each of ``extra_files`` (e.g. the run's ``tokenizer.json``); returns the files.

    Everything is written into a hidden sibling folder renamed ``folder`` at the end: the folder
    appears whole or not at all. ConfigError if ``folder`` exists and is not an empty folder.
    """
    import os
    import secrets
    import shutil

    from safetensors.torch import save

    from ..base.io import atomic_write_bytes, atomic_write_json

    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} already exists and is not an empty folder: choose a new folder "
                          "(nothing is overwritten).")
    flat = {k: v.detach().to("cpu", torch.float32, copy=True).contiguous() for k, v in tensors.items()}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        atomic_write_bytes(tmp / WEIGHTS_FILE, save(flat, metadata={"format": "pt"}))
        atomic_write_json(tmp / CONFIG_FILE, config)
        for f in extra_files:
            shutil.copyfile(f, tmp / Path(f).name)
        if folder.is_dir():
            folder.rmdir()  # empty (checked above)
        try:
            os.rename(tmp, folder)
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(folder)) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(folder.iterdir())


def from_hf(config: dict[str, Any], tensors: dict[str, Tensor], notes: list[str] | None = None
            ) -> tuple[str, dict[str, Any], dict[str, Tensor]]:
    """``(profond model name, its args, its state dict)`` of a GPT-2 or BERT checkpoint."""
    kind = hf_kind(config)
    convert = gpt2_to_profond if kind == "gpt2" else bert_to_profond
    args, state = convert(config, tensors, notes)
    return MODEL_TYPES[kind][0], args, state


def to_hf(model: nn.Module, tokenizer: Any = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(config.json, tensors)`` of a profond ``gpt`` (GPT-2) or ``bert`` (BERT) model; the
    special ids of ``tokenizer`` (a profond tokenizer, or None) go into the config."""
    from .transformer import BERT, GPT

    if isinstance(model, GPT):
        return profond_to_gpt2(model, bos_id=getattr(tokenizer, "bos_id", None),
                               eos_id=getattr(tokenizer, "eos_id", None))
    if isinstance(model, BERT):
        return profond_to_bert(model, pad_id=getattr(tokenizer, "pad_id", None))
    raise ConfigError(f"a {type(model).__name__} cannot be written as GPT-2 or BERT: export-hf writes gpt models "
                      "(GPT2LMHeadModel) and bert models (BertForMaskedLM) only.")


# ----------------------------------------------------------------------------------------
# helpers


def _get(config: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """The first of ``keys`` present in ``config`` (configs renamed some options over time)."""
    for k in keys:
        if k in config and config[k] is not None:
            return config[k]
    return default


def _int(config: dict[str, Any], *keys: str, default: int | None = None) -> int:
    v = _get(config, *keys, default=default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ConfigError(f"{CONFIG_FILE}: {keys[0]} is {v!r}; it must be a non-negative integer.")
    return v


def _float(config: dict[str, Any], key: str, default: float) -> float:
    v = _get(config, key, default=default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{CONFIG_FILE}: {key} is {v!r}; it must be a number.")
    return float(v)


def _require(config: dict[str, Any], key: str, wanted: Any, why: str) -> None:
    v = config.get(key, wanted)
    if v != wanted and not (wanted is False and v is None):
        raise ConfigError(f"{CONFIG_FILE}: {key}={v!r}: {why}; profond imports the standard layout only "
                          f"({key}={wanted!r}).")


def _shape_check(tensors: dict[str, Tensor], expected: dict[str, tuple[int, ...]], what: str,
                 sizes: str) -> None:
    """Every expected tensor present with its shape; ConfigError naming the first problems."""
    missing = [k for k in expected if k not in tensors]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise ConfigError(f"{WEIGHTS_FILE} lacks {', '.join(missing[:3])}{more}, which a {what} with {sizes} "
                          "has: the weights and config.json are of different models.")
    wrong = [f"{k} is {tuple(tensors[k].shape)}, not {v}" for k, v in expected.items()
             if tuple(tensors[k].shape) != v]
    if wrong:
        more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
        raise ConfigError(f"{WEIGHTS_FILE} does not match {CONFIG_FILE} ({sizes}): {'; '.join(wrong[:3])}{more}; "
                          "the weights and config.json are of different models.")


def _strip(tensors: dict[str, Tensor], prefix: str, head: tuple[str, ...]) -> dict[str, Tensor]:
    """Keys of the body without ``prefix`` (a ``*LMHeadModel`` / ``*ForMaskedLM`` saves it, the
    bare ``*Model`` does not); keys starting with one of ``head`` kept as they are."""
    has_prefix = any(k.startswith(prefix) for k in tensors)
    out = {}
    for k, v in tensors.items():
        if k.startswith(head):
            out[k] = v
        elif has_prefix and k.startswith(prefix):
            out[k[len(prefix):]] = v
        else:
            out[k] = v
    return out


def _unexpected(left: dict[str, Tensor], what: str) -> None:
    if left:
        names = sorted(left)
        more = f" (and {len(names) - 3} more)" if len(names) > 3 else ""
        raise ConfigError(f"{WEIGHTS_FILE} holds tensors a {what} does not have ({', '.join(names[:3])}{more}): it is "
                          "another architecture; profond imports GPT2LMHeadModel / GPT2Model and "
                          "BertForMaskedLM / BertModel checkpoints.")


def _f32(t: Tensor) -> Tensor:
    return t.detach().to(torch.float32).contiguous()


# ----------------------------------------------------------------------------------------
# GPT-2


def gpt2_to_profond(config: dict[str, Any], tensors: dict[str, Tensor], notes: list[str] | None = None
                    ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(model args of MODELS "gpt", its state dict)`` from a GPT-2 ``config.json`` and tensors.

    ConfigError for options profond's ``gpt`` does not compute (another activation, cross
    attention, unscaled attention), missing or extra tensors and shapes that do not match the
    config. ``notes`` (when given) gets a line per thing worth telling (left-out buffers, dtype).
    """
    notes = [] if notes is None else notes
    d = _int(config, "n_embd", "hidden_size", default=768)
    layers = _int(config, "n_layer", "num_hidden_layers", default=12)
    heads = _int(config, "n_head", "num_attention_heads", default=12)
    vocab = _int(config, "vocab_size", default=50257)
    n_pos = _int(config, "n_positions", "n_ctx", "max_position_embeddings", default=1024)
    d_ff = _int(config, "n_inner", default=4 * d)
    if min(d, layers, heads, vocab, n_pos, d_ff) < 1 or d % heads:
        raise ConfigError(f"{CONFIG_FILE}: n_embd={d} must be a positive multiple of n_head={heads}, and n_layer, "
                          "vocab_size, n_positions, n_inner positive.")
    act_name = config.get("activation_function", "gelu_new")
    if act_name not in GPT2_ACTIVATIONS:
        raise ConfigError(f"{CONFIG_FILE}: activation_function={act_name!r} is not one profond computes exactly; "
                          f"use one of {', '.join(GPT2_ACTIVATIONS)}.")
    _require(config, "scale_attn_weights", True, "unscaled attention scores")
    _require(config, "scale_attn_by_inverse_layer_idx", False, "attention scaled by 1/(layer+1)")
    _require(config, "add_cross_attention", False, "cross-attention (an encoder-decoder)")
    tied = bool(config.get("tie_word_embeddings", True))

    t = _strip(tensors, "transformer.", ("lm_head.",))
    dropped = [k for k in t if k.endswith((".attn.bias", ".attn.masked_bias"))]  # old causal-mask buffers
    for k in dropped:
        t.pop(k)
    if dropped:
        notes.append(f"left out {len(dropped)} attention-mask buffers (attn.bias / attn.masked_bias): "
                     "profond builds the causal mask itself.")
    expected = {"wte.weight": (vocab, d), "wpe.weight": (n_pos, d), "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for i in range(layers):
        p = f"h.{i}."
        expected.update({
            p + "ln_1.weight": (d,), p + "ln_1.bias": (d,), p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
            p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,),
            p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
            p + "mlp.c_fc.weight": (d, d_ff), p + "mlp.c_fc.bias": (d_ff,),
            p + "mlp.c_proj.weight": (d_ff, d), p + "mlp.c_proj.bias": (d,)})
    if not tied:
        expected["lm_head.weight"] = (vocab, d)
    sizes = f"n_layer={layers}, n_embd={d}, n_inner={d_ff}, vocab_size={vocab}, n_positions={n_pos}"
    _shape_check(t, expected, "GPT-2", sizes)
    if tied and "lm_head.weight" in t:
        if tuple(t["lm_head.weight"].shape) != (vocab, d) or not torch.equal(t["lm_head.weight"], t["wte.weight"]):
            raise ConfigError(f"{CONFIG_FILE} says tie_word_embeddings=true but lm_head.weight differs from "
                              "wte.weight; set tie_word_embeddings to false in config.json if the head is untied.")
        t.pop("lm_head.weight")
    _unexpected({k: v for k, v in t.items() if k not in expected}, "GPT-2 LM")
    dtypes = {str(v.dtype).removeprefix("torch.") for v in t.values()}
    if dtypes != {"float32"}:
        notes.append(f"weights stored as {', '.join(sorted(dtypes))}: converted to float32.")

    sd: dict[str, Tensor] = {"body.tok_embedding.weight": _f32(t["wte.weight"]),
                             "body.pos_embedding.weight": _f32(t["wpe.weight"]),
                             "body.final_norm.weight": _f32(t["ln_f.weight"]),
                             "body.final_norm.bias": _f32(t["ln_f.bias"])}
    for i in range(layers):
        p, q = f"h.{i}.", f"body.blocks.{i}."
        w_qkv = t[p + "attn.c_attn.weight"].T  # (3d, d): Conv1D (in, out) -> Linear (out, in)
        b_qkv = t[p + "attn.c_attn.bias"]
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):  # c_attn = [W^Q | W^K | W^V]
            sd[q + f"attn.{name}.weight"] = _f32(w_qkv[j * d:(j + 1) * d])
            sd[q + f"attn.{name}.bias"] = _f32(b_qkv[j * d:(j + 1) * d])
        sd[q + "attn.out_proj.weight"] = _f32(t[p + "attn.c_proj.weight"].T)
        sd[q + "attn.out_proj.bias"] = _f32(t[p + "attn.c_proj.bias"])
        for a, b in (("ln_1", "norm1"), ("ln_2", "norm2")):
            sd[q + f"{b}.weight"] = _f32(t[p + f"{a}.weight"])
            sd[q + f"{b}.bias"] = _f32(t[p + f"{a}.bias"])
        sd[q + "ffn.fc1.weight"] = _f32(t[p + "mlp.c_fc.weight"].T)
        sd[q + "ffn.fc1.bias"] = _f32(t[p + "mlp.c_fc.bias"])
        sd[q + "ffn.fc2.weight"] = _f32(t[p + "mlp.c_proj.weight"].T)
        sd[q + "ffn.fc2.bias"] = _f32(t[p + "mlp.c_proj.bias"])
    sd["lm_head.weight"] = sd["body.tok_embedding.weight"] if tied else _f32(t["lm_head.weight"])
    args = {"vocab_size": vocab, "d_model": d, "num_heads": heads, "num_layers": layers, "d_ff": d_ff,
            "max_len": n_pos, "pos": "learned", "activation": GPT2_ACTIVATIONS[act_name], "norm": "layer",
            "norm_eps": _float(config, "layer_norm_epsilon", 1e-5),
            "dropout": _float(config, "resid_pdrop", 0.1), "attn_dropout": _float(config, "attn_pdrop", 0.1),
            "bias": True, "tie_weights": tied}
    return args, sd


# ----------------------------------------------------------------------------------------
# export checks


def _exportable_body(model: nn.Module, what: str) -> Any:
    """The :class:`~profond.models.transformer.TransformerBody` of ``model`` if GPT-2 / BERT can
    express it, else ConfigError naming the option that cannot be written."""
    from ..nn.transformer import FeedForward, RMSNorm

    body = model.body
    fix = f"{what} cannot express it: export a model trained with the default"
    if body.pos != "learned":
        raise ConfigError(f"model.pos={body.pos}: {what} has learned absolute positions, {fix} model.pos=learned.")
    if body.tok_embedding is None:
        raise ConfigError(f"this model reads no token ids: {what} needs a token embedding.")
    block = body.blocks[0]
    if not isinstance(block.ffn, FeedForward):
        raise ConfigError(f"model.moe_experts={len(block.ffn.experts)}: a mixture of experts, {fix} model.moe_experts=0.")
    if block.ffn.activation == "swiglu":
        raise ConfigError(f"model.activation=swiglu: {fix} activation.")
    if isinstance(block.norm1, RMSNorm):
        raise ConfigError(f"model.norm=rms: {what} uses LayerNorm, {fix} model.norm=layer.")
    attn = block.attn
    if attn.kv_groups != attn.num_heads:
        raise ConfigError(f"model.kv_groups={attn.kv_groups}: grouped-query attention, {fix} (no model.kv_groups).")
    if attn.q_proj.bias is None or block.ffn.fc1.bias is None:
        raise ConfigError(f"model.bias=false: {what} has biases everywhere, {fix} model.bias=true.")
    if attn.impl in ("linear", "local"):
        raise ConfigError(f"model.attn_impl={attn.impl}: another attention than softmax over all keys; "
                          "set model.attn_impl=sdpa (the weights are the same) before exporting.")
    if any(bool((b.head_mask != 1).any()) for b in body.blocks):
        raise ConfigError("some attention heads are pruned (set_head_mask): reset the head masks to 1 before exporting.")
    return body


def _is_tied(a: nn.Parameter, b: nn.Parameter) -> bool:
    return a is b or a.data_ptr() == b.data_ptr()


def _dropouts(body: Any) -> tuple[float, float]:
    return float(body.drop.p), float(body.blocks[0].attn.dropout)


def profond_to_gpt2(model: nn.Module, *, bos_id: int | None = None, eos_id: int | None = None
                    ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(config.json, tensors)`` of ``GPT2LMHeadModel`` for a profond ``gpt`` model.

    ConfigError naming the option for a model GPT-2 cannot express (see the module docstring).
    ``bos_id`` / ``eos_id``: the run's tokenizer's, written as ``bos_token_id`` / ``eos_token_id``.
    """
    from .transformer import GPT

    if not isinstance(model, GPT):
        raise ConfigError(f"a {type(model).__name__} is not a gpt model: export-hf writes gpt models as GPT-2 "
                          "and bert models as BERT.")
    body = _exportable_body(model, "GPT-2")
    block = body.blocks[0]
    act = block.ffn.activation
    d, heads, layers = body.d_model, block.attn.num_heads, len(body.blocks)
    d_ff = block.ffn.fc1.out_features
    vocab = body.tok_embedding.num_embeddings
    tied = _is_tied(model.lm_head.weight, body.tok_embedding.weight)
    drop, attn_drop = _dropouts(body)
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab,
        "n_positions": body.max_len, "n_embd": d, "n_layer": layers, "n_head": heads, "n_inner": d_ff,
        "activation_function": GPT2_ACTIVATION_NAMES[act], "layer_norm_epsilon": float(block.norm1.eps),
        "resid_pdrop": drop, "embd_pdrop": drop, "attn_pdrop": attn_drop, "initializer_range": INIT_STD,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "use_cache": True, "bos_token_id": bos_id, "eos_token_id": eos_id, "tie_word_embeddings": tied,
        "dtype": "float32",
    }
    t: dict[str, Tensor] = {"transformer.wte.weight": body.tok_embedding.weight,
                            "transformer.wpe.weight": body.pos_embedding.weight,
                            "transformer.ln_f.weight": body.final_norm.weight,
                            "transformer.ln_f.bias": body.final_norm.bias}
    for i, b in enumerate(body.blocks):
        p = f"transformer.h.{i}."
        a = b.attn
        t[p + "ln_1.weight"], t[p + "ln_1.bias"] = b.norm1.weight, b.norm1.bias
        t[p + "ln_2.weight"], t[p + "ln_2.bias"] = b.norm2.weight, b.norm2.bias
        t[p + "attn.c_attn.weight"] = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).T  # (d, 3d)
        t[p + "attn.c_attn.bias"] = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
        t[p + "attn.c_proj.weight"], t[p + "attn.c_proj.bias"] = a.out_proj.weight.T, a.out_proj.bias
        t[p + "mlp.c_fc.weight"], t[p + "mlp.c_fc.bias"] = b.ffn.fc1.weight.T, b.ffn.fc1.bias
        t[p + "mlp.c_proj.weight"], t[p + "mlp.c_proj.bias"] = b.ffn.fc2.weight.T, b.ffn.fc2.bias
    if not tied:
        t["lm_head.weight"] = model.lm_head.weight
    return config, {k: _f32(v) for k, v in t.items()}


# ----------------------------------------------------------------------------------------
# BERT


_BERT_DROPPED = ("pooler.", "cls.seq_relationship.")


def _rename_tf(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Checkpoints converted from the original TensorFlow BERT name LayerNorm's parameters
    ``gamma`` / ``beta``: rename them ``weight`` / ``bias``."""
    out = {}
    for k, v in tensors.items():
        if ".LayerNorm." in k and k.endswith((".gamma", ".beta")):
            k = k.rsplit(".", 1)[0] + (".weight" if k.endswith(".gamma") else ".bias")
        out[k] = v
    return out


def bert_to_profond(config: dict[str, Any], tensors: dict[str, Tensor], notes: list[str] | None = None
                    ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(model args of MODELS "bert", its state dict)`` from a BERT ``config.json`` and tensors.

    A checkpoint without the MLM head (``BertModel``) gets a fresh one (the module docstring
    says which), told in ``notes``; so are the pooler and next-sentence head, left out.
    ConfigError for options ``bert`` does not compute (relative positions, an activation other
    than GELU, a decoder), missing or extra tensors and shapes that do not match the config.
    """
    notes = [] if notes is None else notes
    d = _int(config, "hidden_size", default=768)
    layers = _int(config, "num_hidden_layers", default=12)
    heads = _int(config, "num_attention_heads", default=12)
    vocab = _int(config, "vocab_size", default=30522)
    n_pos = _int(config, "max_position_embeddings", default=512)
    d_ff = _int(config, "intermediate_size", default=3072)
    types = _int(config, "type_vocab_size", default=2)
    if min(d, layers, heads, vocab, n_pos, d_ff, types) < 1 or d % heads:
        raise ConfigError(f"{CONFIG_FILE}: hidden_size={d} must be a positive multiple of num_attention_heads={heads}, "
                          "and num_hidden_layers, vocab_size, max_position_embeddings, intermediate_size, "
                          "type_vocab_size positive.")
    if types > 16:
        raise ConfigError(f"{CONFIG_FILE}: type_vocab_size={types}: profond's bert has at most 16 segment types.")
    _require(config, "hidden_act", "gelu", "another activation than the exact GELU")
    _require(config, "position_embedding_type", "absolute", "relative position embeddings")
    _require(config, "is_decoder", False, "a causal BERT decoder")
    _require(config, "add_cross_attention", False, "cross-attention (an encoder-decoder)")
    tied = bool(config.get("tie_word_embeddings", True))

    t = _strip(_rename_tf(tensors), "bert.", ("cls.",))
    t.pop("embeddings.position_ids", None)  # a buffer (0 … max_len-1) of older versions
    dropped = sorted({k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("cls.") else "")
                      for k in t if k.startswith(_BERT_DROPPED)})
    for k in [k for k in t if k.startswith(_BERT_DROPPED)]:
        t.pop(k)
    if dropped:
        notes.append(f"left out {', '.join(dropped)} (the pooler / next-sentence head): profond's bert is the "
                     "encoder and its MLM head.")
    if "cls.predictions.decoder.bias" in t:  # the bias the decoder adds; cls.predictions.bias when tied
        t["cls.predictions.bias"] = t.pop("cls.predictions.decoder.bias")
    expected = {"embeddings.word_embeddings.weight": (vocab, d), "embeddings.position_embeddings.weight": (n_pos, d),
                "embeddings.token_type_embeddings.weight": (types, d),
                "embeddings.LayerNorm.weight": (d,), "embeddings.LayerNorm.bias": (d,)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            expected[p + name + ".weight"], expected[p + name + ".bias"] = (d, d), (d,)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            expected[p + name + ".weight"], expected[p + name + ".bias"] = (d,), (d,)
        expected[p + "intermediate.dense.weight"], expected[p + "intermediate.dense.bias"] = (d_ff, d), (d_ff,)
        expected[p + "output.dense.weight"], expected[p + "output.dense.bias"] = (d, d_ff), (d,)
    head = {"cls.predictions.transform.dense.weight": (d, d), "cls.predictions.transform.dense.bias": (d,),
            "cls.predictions.transform.LayerNorm.weight": (d,), "cls.predictions.transform.LayerNorm.bias": (d,),
            "cls.predictions.bias": (vocab,)}
    if not tied:
        head["cls.predictions.decoder.weight"] = (vocab, d)
    has_head = any(k.startswith("cls.predictions.") for k in t)
    if has_head:
        expected.update(head)
    sizes = (f"num_hidden_layers={layers}, hidden_size={d}, intermediate_size={d_ff}, vocab_size={vocab}, "
             f"max_position_embeddings={n_pos}, type_vocab_size={types}")
    _shape_check(t, expected, "BERT", sizes)
    if tied and "cls.predictions.decoder.weight" in t:
        w = t.pop("cls.predictions.decoder.weight")
        if tuple(w.shape) != (vocab, d) or not torch.equal(w, t["embeddings.word_embeddings.weight"]):
            raise ConfigError(f"{CONFIG_FILE} says tie_word_embeddings=true but cls.predictions.decoder.weight "
                              "differs from the word embeddings; set tie_word_embeddings to false in config.json "
                              "if the head is untied.")
    _unexpected({k: v for k, v in t.items() if k not in expected}, "BERT masked LM")
    dtypes = {str(v.dtype).removeprefix("torch.") for v in t.values()}
    if dtypes != {"float32"}:
        notes.append(f"weights stored as {', '.join(sorted(dtypes))}: converted to float32.")

    e = "embeddings."
    sd: dict[str, Tensor] = {"body.tok_embedding.weight": _f32(t[e + "word_embeddings.weight"]),
                             "body.pos_embedding.weight": _f32(t[e + "position_embeddings.weight"]),
                             "body.type_embedding.weight": _f32(t[e + "token_type_embeddings.weight"]),
                             "body.embed_norm.weight": _f32(t[e + "LayerNorm.weight"]),
                             "body.embed_norm.bias": _f32(t[e + "LayerNorm.bias"])}
    pairs = (("attention.self.query", "attn.q_proj"), ("attention.self.key", "attn.k_proj"),
             ("attention.self.value", "attn.v_proj"), ("attention.output.dense", "attn.out_proj"),
             ("attention.output.LayerNorm", "norm1"), ("intermediate.dense", "ffn.fc1"),
             ("output.dense", "ffn.fc2"), ("output.LayerNorm", "norm2"))
    for i in range(layers):
        for a, b in pairs:
            for leaf in ("weight", "bias"):
                sd[f"body.blocks.{i}.{b}.{leaf}"] = _f32(t[f"encoder.layer.{i}.{a}.{leaf}"])
    if has_head:
        c = "cls.predictions."
        sd["mlm_transform.weight"] = _f32(t[c + "transform.dense.weight"])
        sd["mlm_transform.bias"] = _f32(t[c + "transform.dense.bias"])
        sd["mlm_norm.weight"] = _f32(t[c + "transform.LayerNorm.weight"])
        sd["mlm_norm.bias"] = _f32(t[c + "transform.LayerNorm.bias"])
        sd["mlm_decoder.bias"] = _f32(t[c + "bias"])
        sd["mlm_decoder.weight"] = sd["body.tok_embedding.weight"] if tied else _f32(t[c + "decoder.weight"])
    else:
        if not tied:
            raise ConfigError(f"{CONFIG_FILE} says tie_word_embeddings=false but the checkpoint has no MLM head "
                              "(cls.predictions.*): there is no decoder to read.")
        gen = torch.Generator().manual_seed(0)
        sd["mlm_transform.weight"] = torch.randn(d, d, generator=gen) * INIT_STD
        sd["mlm_transform.bias"] = torch.zeros(d)
        sd["mlm_norm.weight"], sd["mlm_norm.bias"] = torch.ones(d), torch.zeros(d)
        sd["mlm_decoder.weight"] = sd["body.tok_embedding.weight"]
        sd["mlm_decoder.bias"] = torch.zeros(vocab)
        notes.append("the checkpoint has no MLM head (a BertModel): a fresh one was made (transform "
                     f"N(0, {INIT_STD}²), LayerNorm (1, 0), decoder tied to the word embeddings, bias 0); its "
                     "token predictions mean nothing until it is trained (e.g. by the mlm method).")
    args = {"vocab_size": vocab, "d_model": d, "num_heads": heads, "num_layers": layers, "d_ff": d_ff,
            "max_len": n_pos, "pos": "learned", "norm_first": False, "activation": "gelu",
            "norm_eps": _float(config, "layer_norm_eps", 1e-12),
            "dropout": _float(config, "hidden_dropout_prob", 0.1),
            "attn_dropout": _float(config, "attention_probs_dropout_prob", 0.1),
            "type_vocab": types, "cls_token": False, "tie_weights": tied}
    return args, sd


def profond_to_bert(model: nn.Module, *, pad_id: int | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(config.json, tensors)`` of ``BertForMaskedLM`` for a profond ``bert`` model.

    ConfigError naming the option for a model BERT cannot express (see the module docstring).
    A model without segment embeddings (``type_vocab=0``) is written with one segment type
    whose embedding is zero (the same sum). ``pad_id``: the run's tokenizer's ``<pad>``.
    """
    from .transformer import BERT

    if not isinstance(model, BERT):
        raise ConfigError(f"a {type(model).__name__} is not a bert model: export-hf writes gpt models as GPT-2 "
                          "and bert models as BERT.")
    body = _exportable_body(model, "BERT")
    if body.cls is not None:
        raise ConfigError("model.cls_token=true: a learned [CLS] vector; BERT reads [CLS] as a vocabulary token, "
                          "export a model trained with model.cls_token=false.")
    if body.norm_first:
        raise ConfigError("model.norm_first=true: BERT is Post-Norm (eq. 7.9), export a model trained with "
                          "model.norm_first=false.")
    block = body.blocks[0]
    if block.ffn.activation != "gelu":
        raise ConfigError(f"model.activation={block.ffn.activation}: BERT's hidden_act (GELU) is also its MLM "
                          "head's, export a model trained with model.activation=gelu.")
    d, heads, layers = body.d_model, block.attn.num_heads, len(body.blocks)
    vocab = body.tok_embedding.num_embeddings
    tied = _is_tied(model.mlm_decoder.weight, body.tok_embedding.weight)
    drop, attn_drop = _dropouts(body)
    types = body.type_embedding.weight if body.type_embedding is not None else torch.zeros(1, d)
    config = {
        "architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": vocab, "hidden_size": d,
        "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": block.ffn.fc1.out_features,
        "hidden_act": "gelu", "hidden_dropout_prob": drop, "attention_probs_dropout_prob": attn_drop,
        "max_position_embeddings": body.max_len, "type_vocab_size": types.shape[0],
        "layer_norm_eps": float(block.norm1.eps), "initializer_range": INIT_STD,
        "pad_token_id": 0 if pad_id is None else pad_id, "position_embedding_type": "absolute",
        "is_decoder": False, "tie_word_embeddings": tied, "dtype": "float32",
    }
    e = "bert.embeddings."
    t: dict[str, Tensor] = {e + "word_embeddings.weight": body.tok_embedding.weight,
                            e + "position_embeddings.weight": body.pos_embedding.weight,
                            e + "token_type_embeddings.weight": types,
                            e + "LayerNorm.weight": body.embed_norm.weight, e + "LayerNorm.bias": body.embed_norm.bias}
    for i, b in enumerate(body.blocks):
        p = f"bert.encoder.layer.{i}."
        mods = {"attention.self.query": b.attn.q_proj, "attention.self.key": b.attn.k_proj,
                "attention.self.value": b.attn.v_proj, "attention.output.dense": b.attn.out_proj,
                "attention.output.LayerNorm": b.norm1, "intermediate.dense": b.ffn.fc1,
                "output.dense": b.ffn.fc2, "output.LayerNorm": b.norm2}
        for name, m in mods.items():
            t[p + name + ".weight"], t[p + name + ".bias"] = m.weight, m.bias
    c = "cls.predictions."
    t[c + "transform.dense.weight"], t[c + "transform.dense.bias"] = model.mlm_transform.weight, model.mlm_transform.bias
    t[c + "transform.LayerNorm.weight"], t[c + "transform.LayerNorm.bias"] = model.mlm_norm.weight, model.mlm_norm.bias
    t[c + "bias"] = t[c + "decoder.bias"] = model.mlm_decoder.bias  # the same tensor when tied, read alone when not
    if not tied:
        t[c + "decoder.weight"] = model.mlm_decoder.weight
    return config, {k: _f32(v) for k, v in t.items()}
