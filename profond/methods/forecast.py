"""Time-series forecasting with an RNN (course exercise 5.3, "Sequence models I").

``forecaster`` trains an ``rnn-forecaster`` by mean squared error on sliding windows of
``method.input_len`` normalised steps (:meth:`profond.data.series.SeriesData.windows`) to the
next ``model.horizon`` steps: ``horizon=1`` is the one-step model, ``horizon=H`` the *direct*
multi-step head. Evaluation on val/test (every window of the split), in the series' units:

* one-step: ``rmse``, ``mase`` (column 0 of the head) next to the seasonal-naive baseline
  (``naive_rmse``, ``naive_mase``) and persistence, the last input value (``persist_*``);
* ``method.eval_horizon``-step (``H``, 7 by default) windows, errors averaged over the H
  steps, for three strategies:

  - the chosen ``method.strategy``: ``recursive`` (autoregressive: the one-step forecast is
    fed back as the next input, :meth:`RNNForecaster.recursive`) or ``direct`` (the
    horizon-H head, needs ``model.horizon = eval_horizon``): ``rmse_h``, ``mase_h``;
  - *teacher forcing*: the true values are fed in, i.e. H one-step forecasts
    (``tf_rmse_h``, ``tf_mase_h``; a lower bound no real forecast can use);
  - the seasonal-naive baseline on the same windows: ``naive_rmse_h``, ``naive_mase_h``.

``MASE = MAE / mase_scale`` (in-sample seasonal MAE of the training series). At the end of
training the test split is drawn in ``RUN/forecast.png`` (true series, one-step forecasts,
a few recursive H-step forecasts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..base.coerce import NonNegInt, PosInt
from ..config import RunConfig
from ..contract import Callback, Env, Method, StepContext
from ..data.loader import Batches
from ..data.series import SeriesData, Windows
from ..errors import ConfigError
from ..registry import METHODS, MODELS
from .sequence import _build_dataset

#: recursive (autoregressive one-step model) | direct (model.horizon = eval_horizon)
Strategy = Literal["recursive", "direct"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
PLOT_FILE = "forecast.png"


@dataclass
class ForecastOptions:
    #: steps of history each window feeds the model
    input_len: PosInt = 30
    #: steps of the multi-step evaluation
    eval_horizon: PosInt = 7
    #: recursive (autoregressive one-step model) | direct (model.horizon = eval_horizon)
    strategy: Strategy = "recursive"
    #: shift each window by its last input value (the model forecasts the change from it; the
    #: trend of CO2 takes the test split above every training value)
    center: bool = True
    #: recursive multi-step forecasts drawn on the test plot (0: no plot)
    plot_forecasts: Annotated[NonNegInt, "0: no plot"] = 4
    #: keyword options of the dataset builder, e.g. ``{gaps: drop}``
    dataset: dict[str, Any] = field(default_factory=dict)


class SplitWindows:
    """The windows of one split for evaluation: ``batches()`` yields ``(x, y)`` chunks."""

    def __init__(self, w: Windows, split: str, batch_size: int, device: torch.device):
        self.w, self.split, self.batch_size, self.device = w, split, max(int(batch_size), 1), device

    def __len__(self) -> int:
        return -(-len(self.w) // self.batch_size)

    def batches(self, epoch: int = 0, start: int = 0):
        for k in range(start, len(self)):
            sl = slice(k * self.batch_size, (k + 1) * self.batch_size)
            yield self.w.x[sl].to(self.device), self.w.y[sl].to(self.device)

    def __iter__(self):
        return self.batches(0)


class _ForecastPlot(Callback):
    """Draws ``RUN/forecast.png`` of the test split at the end of training."""

    def __init__(self, method: ForecastMethod):
        self.method = method

    def on_train_end(self, loop: Any) -> None:
        if self.method.opts.plot_forecasts <= 0:
            return
        self.method.eval()
        try:
            with loop.ema_weights():
                self.method.plot(Path(loop.run_dir) / PLOT_FILE)
        finally:
            self.method.train()


@METHODS.register("forecaster", help="time-series forecasting: RNN on 30-step windows, one-step / "
                  "recursive / direct / teacher-forced 7-step RMSE & MASE vs seasonal naive (ex. 5.3)")
class ForecastMethod(Method):
    """Univariate forecasting with an ``rnn-forecaster`` (exercise 5.3)."""

    Options = ForecastOptions
    monitor = ("val_loss", "min")

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env)
        o = self.opts  # types, choices and ranges: the annotations of ForecastOptions
        self.data: SeriesData = _build_dataset(cfg, o.dataset, env.is_main and not cfg.train.quiet, SeriesData,
                                               "a time series; use co2, sunspots or elnino")
        model = MODELS.build(cfg.model.name, **cfg.model.args)
        if not hasattr(model, "recursive") or getattr(model, "input_size", 1) != 1:
            raise ConfigError(f"model {cfg.model.name!r} is not a univariate forecaster; use rnn-forecaster.")
        self.horizon = int(model.horizon)
        if o.strategy == "direct" and self.horizon != o.eval_horizon:
            raise ConfigError(f"method.strategy=direct needs model.horizon = method.eval_horizon "
                              f"({o.eval_horizon}), got model.horizon={self.horizon}.")
        self.nets = {"model": model}
        self.scale = self.data.mase_scale(normalized=True)
        self._windows: dict[tuple[str, int], Windows] = {}
        if with_data:
            w = self.windows("train", self.horizon)
            if not len(w):
                raise ConfigError(f"the train split holds no window of {o.input_len} + {self.horizon} steps.")
            d = cfg.data
            self.train_data = Batches(w.x, w.y, batch_size=d.batch_size, shuffle=True, seed=cfg.train.seed,
                                      device=env.device, mean=(0.0,), std=(1.0,), rank=env.rank,
                                      world_size=env.world_size)
            self.val_data = self.eval_loader("val") if len(self.windows("val", 1)) else None

    def windows(self, split: str, horizon: int) -> Windows:
        key = (split, horizon)
        if key not in self._windows:
            self._windows[key] = self.data.windows(split, input_len=self.opts.input_len, horizon=horizon)
        return self._windows[key]

    def eval_loader(self, split: str) -> SplitWindows:
        return SplitWindows(self.windows(split, 1), split, self.cfg.data.eval_batch_size, self.env.device)

    def test_data(self) -> SplitWindows | None:
        return self.eval_loader("test") if len(self.windows("test", 1)) else None

    def callbacks(self) -> list[Any]:
        return [_ForecastPlot(self)]

    def describe(self) -> dict[str, Any]:
        d = self.data
        return {"dataset": d.name, "data_source": d.source, "freq": d.freq, "units": d.units,
                "period": d.period, "steps": len(d), "filled_gaps": d.n_filled, "gaps": d.gaps,
                "splits": {s: list(b) for s, b in d.bounds.items()},
                "windows": {s: len(self.windows(s, 1)) for s in ("train", "val", "test")},
                "input_len": self.opts.input_len, "model_horizon": self.horizon,
                "eval_horizon": self.opts.eval_horizon, "strategy": self.opts.strategy,
                "mase_scale": self.data.mase_scale(normalized=False)}

    # -- training ----------------------------------------------------------------------------
    def anchor(self, x: Tensor) -> Tensor:
        """``(B, 1)``: the last input value with ``method.center`` (the forecasts are relative
        to it), else zeros."""
        return x[:, -1, :1] if self.opts.center else torch.zeros_like(x[:, -1, :1])

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        x, y = batch
        a = self.anchor(x)
        pred = self.nets["model"](x - a.unsqueeze(1)) + a
        loss = F.mse_loss(pred.float(), y)
        ctx.optimize(loss)
        return {"loss": loss.detach()}

    # -- forecasts (normalised units) ---------------------------------------------------------
    def _model(self) -> torch.nn.Module:
        return self.raw_nets.get("model", self.nets["model"])

    def _run(self, fn: Any, *tensors: Tensor) -> Tensor:
        """``fn`` over chunks of the tensors (on the device), concatenated on the CPU."""
        b = max(int(self.cfg.data.eval_batch_size), 1)
        n = len(tensors[0])
        outs = [fn(*(t[i:i + b].to(self.env.device) for t in tensors)).float().cpu() for i in range(0, n, b)]
        return torch.cat(outs) if outs else torch.zeros(0)

    @torch.no_grad()
    def one_step(self, x: Tensor) -> Tensor:
        """One-step forecasts ``(N,)``: column 0 of the head."""
        return self._run(lambda a: self._forward(a)[:, 0], x)

    def _forward(self, x: Tensor) -> Tensor:
        a = self.anchor(x)
        return self._model()(x - a.unsqueeze(1)) + a

    @torch.no_grad()
    def multi_step(self, x: Tensor, steps: int, strategy: str | None = None) -> Tensor:
        """``(N, steps)`` forecasts by ``strategy`` (default: ``method.strategy``)."""
        strategy = strategy or self.opts.strategy
        if strategy == "direct":
            return self._run(lambda a: self._forward(a)[:, :steps], x)

        def rec(a: Tensor) -> Tensor:  # one anchor (the origin's last value) for the whole recursion
            c = self.anchor(a)
            return self._model().recursive(a - c.unsqueeze(1), steps) + c

        return self._run(rec, x)

    @torch.no_grad()
    def teacher_forced(self, x: Tensor, y: Tensor) -> Tensor:
        """``(N, H)``: step ``h`` forecast from the window ending just before target ``h`` with the
        true values ``y[:, :h]`` fed in (H one-step forecasts)."""
        L, H = x.shape[1], y.shape[1]

        def fn(a: Tensor, b: Tensor) -> Tensor:
            seq = torch.cat([a[..., 0], b[:, :-1]], dim=1)  # (B, L + H - 1)
            return torch.stack([self._forward(seq[:, h:h + L, None])[:, 0] for h in range(H)], dim=1)

        return self._run(fn, x, y)

    # -- metrics -----------------------------------------------------------------------------
    def _errors(self, prefix: str, suffix: str, pred: Tensor, y: Tensor) -> dict[str, float]:
        """RMSE in the series' units and MASE of normalised ``pred`` vs ``y`` (finite forecasts)."""
        keep = torch.isfinite(pred)
        p, t = pred[keep].double(), y[keep].double()
        if not len(p):
            return {}
        rmse = float((p - t).pow(2).mean().sqrt()) * self.data.std
        mase = float((p - t).abs().mean()) / self.scale
        return {f"{prefix}rmse{suffix}": rmse, f"{prefix}mase{suffix}": mase}

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        sq, n = 0.0, 0
        for x, y in batches.batches(0):
            a = self.anchor(x)
            with ctx.autocast():
                pred = self.nets["model"](x - a.unsqueeze(1)).float() + a
            sq += F.mse_loss(pred.float()[:, :1], y[:, :1].float(), reduction="sum").item()
            n += len(y)
        out: dict[str, Any] = {"loss": sq / max(n, 1)}
        split = getattr(batches, "split", None)
        if split not in ("val", "test"):
            return out
        w = self.windows(split, 1)
        y1 = w.y[:, 0]
        out.update(self._errors("", "", self.one_step(w.x), y1))
        out.update(self._errors("naive_", "", self.data.seasonal_naive(w)[:, 0], y1))
        out.update(self._errors("persist_", "", w.x[:, -1, 0], y1))
        H = self.opts.eval_horizon
        wh = self.windows(split, H)
        if len(wh):
            s = f"_{H}"
            out.update(self._errors("", s, self.multi_step(wh.x, H), wh.y))
            out.update(self._errors("tf_", s, self.teacher_forced(wh.x, wh.y), wh.y))
            out.update(self._errors("naive_", s, self.data.seasonal_naive(wh)[:, :H], wh.y))
            if detailed:
                out["multi_step_windows"] = len(wh)
        if detailed:
            out["windows"] = len(w)
            out["strategy"] = self.opts.strategy
            out["units"] = self.data.units
        return out

    # -- plot --------------------------------------------------------------------------------
    @torch.no_grad()
    def plot(self, path: str | Path, split: str = "test") -> Path:
        """True series, one-step forecasts and ``plot_forecasts`` recursive H-step forecasts."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        d, H = self.data, self.opts.eval_horizon
        w = self.windows(split, 1)
        t1 = w.target_index.numpy()
        fig, ax = plt.subplots(figsize=(11, 4))
        if len(w):
            lo = int(t1[0]) - self.opts.input_len
            idx = np.arange(max(lo, 0), int(t1[-1]) + 1)
            ax.plot(idx, d.values[idx], color="black", lw=1.0, label="true")
            ax.plot(t1, d.denormalize(self.one_step(w.x).numpy()), color="tab:blue", lw=0.9,
                    label="one-step forecast")
            wh = self.windows(split, H)
            k = min(self.opts.plot_forecasts, len(wh))
            if k:
                picks = np.linspace(0, len(wh) - 1, k).round().astype(int)
                rec = self.multi_step(wh.x[picks], H, "recursive").numpy()
                for j, i in enumerate(picks):
                    t0 = int(wh.target_index[i])
                    ax.plot(np.arange(t0, t0 + H), d.denormalize(rec[j]), color="tab:red", lw=1.8,
                            label=f"recursive {H}-step" if j == 0 else None)
        ax.set_xlabel(f"step ({d.freq})")
        ax.set_ylabel(d.units)
        ax.set_title(f"{d.name}: {split} split")
        ax.legend(loc="best")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


__all__ = ["ForecastMethod", "ForecastOptions", "SplitWindows", "PLOT_FILE", "STRATEGIES"]
