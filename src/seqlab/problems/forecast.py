"""Many-to-one over time: forecasting a numeric series with the RNN as a state-space model.

    x_t = f(x_{t-1}, u_t)        the recurrent state (seqlab.recurrent.Recurrent, any cell,
                                 unidirectional, model.encoder_layers layers)
    y_t = h(x_t)                 a linear read-out of the top layer's state

The encoder reads a window of the last W values u_{o-W+1} .. u_o up to an origin o (each
value scaled, optionally with the season's phase as sin / cos: forecast.calendar); its final
state x_o maps to the next values. Two multi-step strategies (forecast.strategy):

    direct      y = W_out x_o + b in R^H: the H next values at once, each horizon its own
                output (trained on all H targets)
    recursive   a one-step model (y in R^1, trained on the next value only); for h > 1 its
                prediction is fed back as the next input and the state steps on:
                x_{o+k} = f(x_{o+k-1}, [y_{o+k}, calendar_{o+k}]), y_{o+k+1} = h(x_{o+k})

Data: one series (forecast.series): a CSV file (data.train; a header line, a time column and
a value column), the series inside statsmodels (co2: weekly CO2 at Mauna Loa 1958-2001;
sunspots: yearly sunspot numbers 1700-2008), or a generated noisy sine with a trend (tests).
Missing values (co2 has 59 missing weeks; empty / NA cells of a CSV) are filled causally,
from the past only: a missing value is the last value plus the change over the same steps
one season earlier (y_i = y_{i-1} + y_{i-m} - y_{i-1-m}, the seasonal random walk from the
last observation; y_{i-1} within the first season); missing values before the first or
after the last observation are dropped. Times are numbers (years) or ISO dates; rows are
taken as consecutive steps (the spacing is not checked).

Splits by time: train, valid, test are consecutive parts (the last forecast.test_fraction of
the values is test, the valid_fraction before it is valid). The scaler (mean and standard
deviation) is fitted on the training part only; with forecast.relative the window's last
scaled value is subtracted from the inputs and from the targets (the model sees shapes, not
levels, so a trend can leave the training range). Training examples are the windows whose
targets all lie in the training part.

Evaluation is rolling-origin: in a part [s, e) every origin o = s-1 .. e-H-1 forecasts
o+1 .. o+H from the values up to o. Validation (early stopping, and every choice) uses the
valid part; the test part is only reported. Metrics over all (origin, h): MAE, RMSE and MASE
= MAE / the in-sample seasonal-naive MAE of the training part, mean |y_t - y_{t-m}| (Hyndman
& Koehler 2006). Peers on the same origins (report): seasonal-naive, ETS and SARIMA. The
classical models are fitted once on the training part (ETS: the lowest AIC of trend none /
additive / damped x seasonal none / additive, additive errors; SARIMA: the lowest AIC over
p <= sarima_max_p, q <= sarima_max_q, P, Q likewise, with d and D fixed) and re-filtered,
not refit, at each origin: the fitted parameters run over the values up to the origin, as
the network, trained once, reads the window up to it. Neither ever sees a value after its
origin.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from seqlab.checkpoint import Checkpointed
from seqlab.config import Config, ConfigError, ModelConfig
from seqlab.dropout import Dropout
from seqlab.errors import DataError
from seqlab.recurrent import Recurrent

SEASONS = {"co2": 52, "sunspots": 11, "sine": 12, "csv": 1}  # m when forecast.season is null
MISSING = {"", "na", "nan", "null", "none"}  # CSV value cells read as a missing value
YEAR = np.timedelta64(31_556_952, "s")  # 365.2425 days


# ---------------------------------------------------------------------------------- the series
@dataclass
class Series:
    """A series: times (N,) float64 numbers or datetime64[s] dates, values (N,) float64."""

    times: np.ndarray
    values: np.ndarray
    source: str
    filled: int = 0  # missing values filled (see fill_gaps)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def kind(self) -> str:
        return "date" if np.issubdtype(self.times.dtype, np.datetime64) else "number"

    def step(self):
        """The median spacing of the times (a number, or a timedelta64 for dates)."""
        if self.kind == "date":
            if len(self.times) < 2:
                return np.timedelta64(1, "D")
            seconds = np.diff(self.times).astype("timedelta64[s]").astype(np.int64)
            return np.timedelta64(int(np.median(seconds)), "s")
        return float(np.median(np.diff(self.times))) if len(self.times) > 1 else 1.0

    def future_times(self, n: int) -> np.ndarray:
        """The n times after the last one, `step()` apart."""
        return self.times[-1] + self.step() * np.arange(1, n + 1)

    def head(self, n: int) -> Series:
        return Series(self.times[:n], self.values[:n], self.source, self.filled)


def format_time(t) -> str:
    """A date as YYYY-MM-DD (with the time of day when it has one); a number as %g."""
    if isinstance(t, np.datetime64):
        day = t.astype("datetime64[D]")
        return str(day) if day == t else str(t.astype("datetime64[s]"))
    t = float(t)
    return str(int(t)) if t.is_integer() else f"{t:g}"


def fill_gaps(values: np.ndarray, season: int) -> tuple[np.ndarray, int]:
    """Missing values (NaN) filled from the past only: y_i = y_{i-1} + (y_{i-m} - y_{i-1-m})
    (y_{i-1} when m = 1 or i - 1 - m < 0); the first value must be present. -> (filled, count)."""
    out = np.array(values, dtype=np.float64)
    gaps = np.flatnonzero(np.isnan(out))
    for i in gaps:
        out[i] = out[i - 1] + (out[i - season] - out[i - 1 - season]
                               if season > 1 and i - 1 - season >= 0 else 0.0)
    return out, len(gaps)


def _trim_and_fill(times: np.ndarray, values: np.ndarray, source: str, season: int) -> Series:
    """Drop missing values at both ends, fill the ones inside (fill_gaps)."""
    present = np.flatnonzero(~np.isnan(values))
    if len(present) == 0:
        raise DataError(f"{source}: no values (every value is missing)")
    first, last = present[0], present[-1] + 1
    filled, count = fill_gaps(values[first:last], season)
    return Series(times[first:last], filled, source, count)


def _parse_time(text: str):
    """A number, or an ISO date / date-time (datetime64[s]); None if neither."""
    value = _number(text)
    if value is not None:
        return value
    try:
        return np.datetime64(text.strip(), "s")
    except ValueError:
        return None


def _column_index(path: str, column: int | str, names: list[str], key: str) -> int:
    if isinstance(column, int):
        if column > len(names):
            raise DataError(f"{path}:1: forecast.{key} is column {column}, but the header has "
                            f"{len(names)} columns ({', '.join(names)})")
        return column - 1
    if column not in names:
        raise DataError(f"{path}:1: no column {column!r} in the header ({', '.join(names)}); "
                        f"set forecast.{key}")
    return names.index(column)


def read_csv_series(path: str | Path, time_column: int | str = "time",
                    value_column: int | str = "value", season: int = 1) -> Series:
    """A CSV file: a header line, then one row per time (comma-separated, quotes allowed).
    Times: numbers or ISO dates (all rows alike), strictly increasing; values: numbers, or an
    empty / NA / NaN cell for a missing value (filled, see fill_gaps). Anything else is a
    one-line DataError naming the file and line."""
    from seqlab.data import _read_raw_lines

    path = str(path)
    lines = _read_raw_lines(path)
    if not lines or not lines[0].strip():
        raise DataError(f"{path}: empty file (a forecast CSV starts with a header line naming "
                        "its columns)")
    names = [n.strip() for n in next(csv.reader([lines[0]]))]
    t_at = _column_index(path, time_column, names, "time_column")
    v_at = _column_index(path, value_column, names, "value_column")
    times, values, kinds, seen = [], [], set(), {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = next(csv.reader([line]))
        if len(cells) <= max(t_at, v_at):
            raise DataError(f"{path}:{lineno}: {len(cells)} column(s), but the header has "
                            f"{len(names)} ({', '.join(names)})")
        t_text, v_text = cells[t_at].strip(), cells[v_at].strip()
        t = _parse_time(t_text)
        if t is None:
            raise DataError(f"{path}:{lineno}: time {t_text!r} is neither a number nor a date "
                            "(YYYY-MM-DD)")
        kind = "date" if isinstance(t, np.datetime64) else "number"
        if kinds and kind not in kinds:
            raise DataError(f"{path}:{lineno}: time {t_text!r} is a {kind}, but the times "
                            f"before it are {kinds.pop()}s")
        kinds.add(kind)
        value = math.nan if v_text.lower() in MISSING else _number(v_text)
        if value is None:
            raise DataError(f"{path}:{lineno}: value {v_text!r} is not a number (column "
                            f"{names[v_at]!r})")
        if times and t in seen:
            raise DataError(f"{path}:{lineno}: time {t_text} is also on line {seen[t]}; one "
                            "value per time")
        if times and t < times[-1][0]:
            raise DataError(f"{path}:{lineno}: time {t_text} comes before the time on line "
                            f"{times[-1][1]} ({times[-1][2]}); sort the file by time")
        seen[t] = lineno
        times.append((t, lineno, t_text))
        values.append(value)
    if not times:
        raise DataError(f"{path}: no rows after the header line")
    array = (np.array([t for t, _, _ in times], dtype="datetime64[s]") if "date" in kinds
             else np.array([t for t, _, _ in times], dtype=np.float64))
    return _trim_and_fill(array, np.array(values, dtype=np.float64), path, season)


def _number(text: str) -> float | None:
    """A finite number, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def statsmodels_series(name: str, season: int) -> Series:
    """co2 (weekly, 1958-03-29 .. 2001-12-29) or sunspots (yearly, 1700 .. 2008), as shipped
    inside statsmodels (no download)."""
    if name == "co2":
        from statsmodels.datasets import co2

        frame = co2.load_pandas().data
        times = frame.index.values.astype("datetime64[s]")
        values = frame["co2"].to_numpy(dtype=np.float64)
        source = "statsmodels co2 (weekly, Mauna Loa)"
    elif name == "sunspots":
        from statsmodels.datasets import sunspots

        frame = sunspots.load_pandas().data
        times = frame["YEAR"].to_numpy(dtype=np.float64)
        values = frame["SUNACTIVITY"].to_numpy(dtype=np.float64)
        source = "statsmodels sunspots (yearly)"
    else:
        raise ValueError(f"unknown series {name!r}")
    return _trim_and_fill(times, values, source, season)


def sine_series(n: int, seed: int = 0, period: int = 12) -> Series:
    """A generated series: 10 + 0.02 t + 2 sin(2 pi t / period) + N(0, 0.1^2), t = 0..n-1."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    values = 10 + 0.02 * t + 2 * np.sin(2 * np.pi * t / period) + rng.normal(0, 0.1, n)
    return Series(t, values, f"generated sine ({n} values, period {period})")


def season_of(config: Config) -> int:
    f = config.forecast
    return f.season if f.season is not None else SEASONS[f.series]


def load_series(config: Config) -> Series:
    """The series of `config.forecast.series` (csv: data.train)."""
    f, season = config.forecast, season_of(config)
    if f.series == "csv":
        return read_csv_series(config.data.path(config.data.train), f.time_column,
                               f.value_column, season)
    if f.series == "sine":
        return sine_series(f.sine_length, seed=config.train.seed, period=season)
    return statsmodels_series(f.series, season)


def split_bounds(n: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(a, b): train = [0, a), valid = [a, b), test = [b, n), consecutive."""
    n_test = max(1, round(n * test_fraction))
    n_valid = max(1, round(n * valid_fraction))
    return n - n_test - n_valid, n - n_test


def check_length(series: Series, window: int, horizon: int, a: int, b: int) -> None:
    """Enough values for one training window and one origin in valid and in test."""
    n = len(series)
    if a >= window + horizon and b - a >= horizon and n - b >= horizon:
        return
    raise DataError(f"{series.source}: {n} values are too few for forecast.window {window} and "
                    f"horizon {horizon}: the training part ({a} values) needs at least "
                    f"{window + horizon}, and the validation and test parts ({b - a} and "
                    f"{n - b}) at least {horizon} each")


# ---------------------------------------------------------------------------------- features
@dataclass
class Scaling:
    """What turns values into model inputs; fitted on the training part, saved in checkpoints.

    mean, std: z = (y - mean) / std; season m; kind ("date" / "number") and period: the
    season's phase of a time t is frac(t / period) (numbers), or the fraction of the year when
    a season is about a year of dates, else frac((t - 1970-01-01) / period)."""

    mean: float
    std: float
    season: int
    kind: str
    period: float  # numbers: step * m; dates: seconds

    @classmethod
    def fit(cls, train: Series, season: int) -> Scaling:
        values = train.values
        std = float(values.std())
        step = train.step()
        if train.kind == "date":
            period = float(step.astype(np.int64)) * season  # step: timedelta64[s]
        else:
            period = float(step) * season
        return cls(float(values.mean()), std if std > 0 else 1.0, season, train.kind, period)

    def scale(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.std

    def unscale(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float64) * self.std + self.mean

    def phase(self, times: np.ndarray) -> np.ndarray:
        """The season's phase in [0, 1) of each time."""
        if np.issubdtype(np.asarray(times).dtype, np.datetime64):
            times = np.asarray(times, dtype="datetime64[s]")
            year = float(YEAR.astype(np.int64))
            if abs(self.period - year) < 0.05 * year:  # weekly / monthly / daily: the year
                start = times.astype("datetime64[Y]").astype("datetime64[s]")
                end = (times.astype("datetime64[Y]") + 1).astype("datetime64[s]")
                return ((times - start).astype(np.int64) / (end - start).astype(np.int64))
            seconds = times.astype(np.int64).astype(np.float64)
        else:
            seconds = np.asarray(times, dtype=np.float64)
        return np.mod(seconds / self.period, 1.0)

    def calendar(self, times: np.ndarray) -> np.ndarray:
        """(N, 2): sin and cos of 2 pi phase."""
        angle = 2 * np.pi * self.phase(times)
        return np.stack([np.sin(angle), np.cos(angle)], axis=-1)

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> Scaling:
        return cls(float(state["mean"]), float(state["std"]), int(state["season"]),
                   str(state["kind"]), float(state["period"]))


def inputs_of(series: Series, scaling: Scaling, calendar: bool) -> np.ndarray:
    """(N, F) float64: the scaled values, then sin / cos of the phase (with calendar)."""
    z = scaling.scale(series.values)[:, None]
    if not calendar:
        return z
    return np.concatenate([z, scaling.calendar(series.times)], axis=1)


def windows(features: np.ndarray, origins: np.ndarray, window: int,
            relative: bool) -> np.ndarray:
    """(n, W, F): rows o-W+1 .. o of `features` for each origin o (relative: the value column
    minus its value at o). Only rows up to the origin are read."""
    index = origins[:, None] + np.arange(1 - window, 1)[None, :]  # (n, W)
    if (index < 0).any():
        raise ValueError("an origin has fewer than `window` values before it")
    x = features[index].copy()
    if relative:
        x[:, :, 0] -= features[origins, 0][:, None]
    return x


def targets(features: np.ndarray, origins: np.ndarray, horizon: int,
            relative: bool) -> np.ndarray:
    """(n, H): scaled values o+1 .. o+H (relative: minus the value at o)."""
    y = features[origins[:, None] + np.arange(1, horizon + 1)[None, :], 0]
    return y - features[origins, 0][:, None] if relative else y


# ---------------------------------------------------------------------------------- the model
class RNNForecaster(nn.Module):
    """Recurrent (unidirectional) -> final state of the top layer -> dropout -> linear.

    forward(x (B, W, F), targets (B, K) or None) -> prediction (B, K), the loss summed over
    B x K values (None without targets); K = horizon (direct) or 1 (recursive)."""

    def __init__(self, *, inputs: int, outputs: int, hidden_size: int, cell: str,
                 num_layers: int, dropout: float, loss: str = "mse", backend: str = "auto",
                 reset_after: bool = True):
        super().__init__()
        if loss not in ("mse", "mae"):
            raise ValueError(f"loss must be mse or mae, not {loss!r}")
        self.loss_kind = loss
        self.rnn = Recurrent(cell, inputs, hidden_size, num_layers=num_layers, dropout=dropout,
                             backend=backend, reset_after=reset_after)
        self.dropout = Dropout(dropout)
        self.out = nn.Linear(hidden_size, outputs)

    @property
    def outputs(self) -> int:
        return self.out.out_features

    def forward(self, x: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        states, _ = self.rnn(x)  # (B, W, H): x_t for every step; x_o = states[:, -1]
        prediction = self.out(self.dropout(states[:, -1]))  # (B, K)
        if targets is None:
            return prediction, None
        error = prediction - targets
        loss = error.square().sum() if self.loss_kind == "mse" else error.abs().sum()
        return prediction, loss

    @torch.no_grad()
    def forecast(self, x: Tensor, horizon: int, future: Tensor | None = None) -> Tensor:
        """(B, horizon), in the model's units (scaled; relative to x's last value if trained
        so). direct: the first `horizon` outputs (horizon <= outputs). recursive: the
        one-step prediction fed back as the next input; `future` (B, horizon - 1, F - 1)
        holds the calendar inputs of the steps o+1 .. o+horizon-1 (None without calendar)."""
        if self.outputs > 1:
            if horizon > self.outputs:
                raise ValueError(f"horizon {horizon} > the model's {self.outputs} outputs")
            return self(x)[0][:, :horizon]
        states, state = self.rnn(x)
        y = self.out(states[:, -1])  # (B, 1)
        out = [y]
        for k in range(horizon - 1):
            step = y if future is None else torch.cat([y, future[:, k]], dim=-1)
            top, state = self.rnn.step(step, state)
            y = self.out(top)
            out.append(y)
        return torch.cat(out, dim=-1)


def build_forecaster(cfg: ModelConfig, forecast, inputs: int) -> RNNForecaster:
    outputs = forecast.horizon if forecast.strategy == "direct" else 1
    return RNNForecaster(inputs=inputs, outputs=outputs, hidden_size=cfg.hidden_size,
                         cell=cfg.cell, num_layers=cfg.encoder_layers, dropout=cfg.dropout,
                         loss=forecast.loss, backend=cfg.backend,
                         reset_after=cfg.gru_reset_after)


# ---------------------------------------------------------------------------------- metrics
def truth_matrix(values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """(n, H): values[o + h] for h = 1..H."""
    return np.asarray(values)[origins[:, None] + np.arange(1, horizon + 1)[None, :]]


def mase_scale(train_values: np.ndarray, season: int) -> float:
    """The in-sample seasonal-naive MAE of the training part: mean |y_t - y_{t-m}|."""
    y = np.asarray(train_values, dtype=np.float64)
    if len(y) <= season:
        raise DataError(f"the training part ({len(y)} values) is not longer than one season "
                        f"({season}): MASE has no scale")
    scale = float(np.mean(np.abs(y[season:] - y[:-season])))
    return scale if scale > 0 else float("nan")


def forecast_metrics(truth: np.ndarray, prediction: np.ndarray, scale: float) -> dict:
    """MAE, RMSE, MASE over every (origin, h), and the MAE of each horizon h = 1..H."""
    error = np.asarray(prediction, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    mae = float(np.mean(np.abs(error)))
    return {"mae": mae, "rmse": float(np.sqrt(np.mean(error ** 2))), "mase": mae / scale,
            "mae_by_horizon": [float(v) for v in np.mean(np.abs(error), axis=0)],
            "origins": int(error.shape[0])}


def rolling_origins(start: int, end: int, horizon: int) -> np.ndarray:
    """Origins o = start-1 .. end-H-1: each forecasts o+1 .. o+H, inside [start, end)."""
    return np.arange(start - 1, end - horizon)


# ---------------------------------------------------------------------------------- the peers
def seasonal_naive(values: np.ndarray, origins: np.ndarray, horizon: int,
                   season: int) -> np.ndarray:
    """(n, H): y_{o+h} forecast as y_{o+h-m*ceil(h/m)}, the last value of the same phase."""
    h = np.arange(1, horizon + 1)
    back = h - season * np.ceil(h / season).astype(int)  # <= 0
    return np.asarray(values)[origins[:, None] + back[None, :]]


def fit_ets(train: np.ndarray, season: int) -> dict:
    """The ETS (additive errors) of lowest AIC on the training values: trend none / additive /
    additive damped x seasonal none / additive (with m > 1 and two seasons of data); the
    initial states are estimated with the smoothing parameters, by maximum likelihood (on
    co2, statsmodels' heuristic initial seasonal states instead gave a validation MASE of
    1.05 against 0.67).
    -> {"spec": ETSModel keywords, "params": fitted, "aic": ..., "tried": [...]}"""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    seasonal = [None] + (["add"] if season > 1 and len(train) >= 2 * season else [])
    best, tried = None, []
    with warnings.catch_warnings():  # statsmodels' convergence warnings: the AIC decides
        warnings.simplefilter("ignore")
        for trend, damped in ((None, False), ("add", False), ("add", True)):
            for s in seasonal:
                spec = dict(error="add", trend=trend, damped_trend=damped, seasonal=s,
                            seasonal_periods=season if s else None,
                            initialization_method="estimated")
                try:
                    result = ETSModel(train, **spec).fit(disp=False)
                except Exception:  # a model that cannot be fitted here is left out
                    continue
                aic = float(result.aic)
                tried.append({"trend": trend, "damped": damped, "seasonal": s, "aic": aic})
                if math.isfinite(aic) and (best is None or aic < best["aic"]):
                    best = {"spec": spec, "params": np.asarray(result.params), "aic": aic}
    if best is None:
        raise DataError("ETS: no model could be fitted to the training part")
    best["tried"] = tried
    return best


def ets_forecasts(fit: dict, values: np.ndarray, origins: np.ndarray,
                  horizon: int) -> np.ndarray:
    """(n, H): at each origin the fitted ETS re-filtered (`smooth`, fixed parameters) over the
    values up to the origin only, then forecast."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    out = np.empty((len(origins), horizon))
    with warnings.catch_warnings():  # statsmodels' convergence warnings: the AIC decides
        warnings.simplefilter("ignore")
        for i, o in enumerate(origins):
            result = ETSModel(np.asarray(values[: o + 1]), **fit["spec"]).smooth(fit["params"])
            out[i] = result.forecast(horizon)
    return out


def fit_sarima(train: np.ndarray, season: int, d: int, seasonal_d: int, max_p: int,
               max_q: int, max_seasonal_p: int, max_seasonal_q: int) -> dict:
    """The SARIMA of lowest AIC on the training values over p <= max_p, q <= max_q, P, Q
    likewise (seasonal terms only with m > 1), d and D fixed; with d = D = 0 a constant is
    fitted too (an undifferenced series has a mean). -> {"order", "seasonal_order",
    "result" (fitted on train), "aic", "tried"}"""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    seasonal = season > 1
    grid = [(p, q, P, Q) for p in range(max_p + 1) for q in range(max_q + 1)
            for P in range(max_seasonal_p + 1 if seasonal else 1)
            for Q in range(max_seasonal_q + 1 if seasonal else 1)]
    best, tried = None, []
    with warnings.catch_warnings():  # statsmodels' convergence warnings: the AIC decides
        warnings.simplefilter("ignore")
        for p, q, P, Q in grid:
            order = (p, d, q)
            seasonal_order = (P, seasonal_d, Q, season) if seasonal else (0, 0, 0, 0)
            try:
                result = SARIMAX(train, order=order, seasonal_order=seasonal_order,
                                 trend="c" if d + seasonal_d == 0 else "n").fit(disp=False)
            except Exception:  # singular or non-stationary starts: left out
                continue
            aic = float(result.aic)
            tried.append({"order": list(order), "seasonal_order": list(seasonal_order),
                          "aic": aic})
            if math.isfinite(aic) and (best is None or aic < best["aic"]):
                best = {"order": order, "seasonal_order": seasonal_order, "result": result,
                        "aic": aic}
    if best is None:
        raise DataError("SARIMA: no model could be fitted to the training part")
    best["tried"] = tried
    return best


def sarima_forecasts(fit: dict, values: np.ndarray, origins: np.ndarray,
                     horizon: int) -> np.ndarray:
    """(n, H): the fitted SARIMA's Kalman filter (fixed parameters) run over the values up to
    each origin, then forecast. The filter is applied to the values up to the first origin and
    extended one value at a time (`extend`: the same filter, continued), so the forecast at o
    has read exactly y_0 .. y_o."""
    out = np.empty((len(origins), horizon))
    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():  # statsmodels' convergence warnings: the AIC decides
        warnings.simplefilter("ignore")
        result, at = None, None
        for i, o in enumerate(origins):
            if result is None or o < at:
                result = fit["result"].apply(values[: o + 1])
            elif o > at:
                result = result.extend(values[at + 1 : o + 1])
            at = o
            out[i] = result.forecast(horizon)
    return out


# ---------------------------------------------------------------------------------- prediction
@dataclass
class Forecast:
    """The next values after a history: times (dates or numbers) and values."""

    times: list
    values: list[float]

    def lines(self) -> list[str]:
        return [f"{format_time(t)}\t{v:.6g}" for t, v in zip(self.times, self.values)]


class Forecaster:
    """A trained forecaster: a history in, its next values out.

        forecaster = Forecaster.from_checkpoint("runs/forecast_co2")
        forecaster.predict(series, 13)          # -> Forecast(times, values)
        forecaster.forecast_at(series, origins)  # (n, H) rolling forecasts, original units
    """

    def __init__(self, model: RNNForecaster, scaling: Scaling, config: Config,
                 device: torch.device | str = "cpu"):
        self.model = model.to(device).eval()
        self.scaling, self.config, self.device = scaling, config, torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: Checkpointed, device: str = "auto") -> Forecaster:
        from seqlab.checkpoint import load_weights, open_for_prediction

        target, where, config, scaling, weights = open_for_prediction(
            path, device, "forecast", Scaling.from_state_dict, "its scaling is damaged")
        f, m = config.forecast, config.model
        model = build_forecaster(m, f, 3 if f.calendar else 1)
        load_weights(model, weights, where, f"model.cell {m.cell}, hidden_size {m.hidden_size}, "
                     f"layers {m.encoder_layers}, forecast.strategy {f.strategy}")
        return cls(model, scaling, config, target)

    @property
    def horizon(self) -> int:
        return self.config.forecast.horizon

    def forecast_at(self, series: Series, origins: Sequence[int] | np.ndarray,
                    horizon: int | None = None, batch: int = 1024) -> np.ndarray:
        """(n, horizon) forecasts in the series' units, the row of origin o made from
        series.values[: o + 1] only (and, for the calendar inputs, the times after o).
        horizon: at most forecast.horizon for a direct model (its outputs), any for a
        recursive one; default forecast.horizon."""
        f = self.config.forecast
        horizon = horizon or f.horizon
        if self.model.outputs > 1 and horizon > self.model.outputs:
            raise ValueError(f"a direct model forecasts at most {self.model.outputs} values "
                             f"at once, not {horizon} (predict chains blocks)")
        origins = np.asarray(origins, dtype=np.int64)
        if len(origins) == 0:
            return np.empty((0, horizon))
        if origins.min() < f.window - 1 or origins.max() >= len(series):
            raise DataError(f"{series.source}: an origin needs forecast.window={f.window} "
                            "values up to it")
        times = np.concatenate([series.times, series.future_times(horizon)])
        out = np.empty((len(origins), horizon))
        for start in range(0, len(origins), batch):
            part = origins[start : start + batch]
            out[start : start + len(part)] = self._forecast(series.values, times, part,
                                                            horizon)
        return out

    def _forecast(self, values: np.ndarray, times: np.ndarray, origins: np.ndarray,
                  horizon: int) -> np.ndarray:
        """Forecasts from values[: o + 1] for each origin o; `times` may run past the values
        (the calendar of the steps a recursive model feeds back)."""
        f, s = self.config.forecast, self.scaling
        last = int(origins.max())
        known = Series(times[: last + 1], np.asarray(values[: last + 1], dtype=np.float64), "")
        features = inputs_of(known, s, f.calendar)  # nothing after the last origin is read
        x = torch.tensor(windows(features, origins, f.window, f.relative),
                         dtype=torch.float32, device=self.device)
        future = None
        if f.calendar and self.model.outputs == 1 and horizon > 1:
            at = origins[:, None] + np.arange(1, horizon)[None, :]  # (n, H - 1)
            future = torch.tensor(s.calendar(times[at].reshape(-1)).reshape(
                len(origins), horizon - 1, 2), dtype=torch.float32, device=self.device)
        self.model.eval()
        z = self.model.forecast(x, horizon, future).double().cpu().numpy()
        if f.relative:
            z = z + features[origins, 0][:, None]
        return s.unscale(z)

    def predict(self, history: Series | Sequence[float], horizon: int | None = None
                ) -> Forecast:
        """The `horizon` (default forecast.horizon) values after the history (a Series, or
        plain values: their times are then 0, 1, 2, ...). A direct model asked for more than
        its H outputs forecasts blocks of H, each from the history and the blocks before."""
        if not isinstance(history, Series):
            values = np.asarray(list(history), dtype=np.float64)
            history = Series(np.arange(len(values), dtype=np.float64), values, "history")
        horizon = self.horizon if horizon is None else horizon
        if horizon < 1:
            raise ConfigError(f"horizon must be >= 1, got {horizon}")
        window = self.config.forecast.window
        if len(history) < window:
            raise DataError(f"{history.source}: {len(history)} values, fewer than the model's "
                            f"window of {window}")
        if self.config.forecast.calendar and history.kind != self.scaling.kind:
            raise DataError(f"{history.source}: its times are {history.kind}s, but the model "
                            f"was trained on {self.scaling.kind}s (its calendar inputs)")
        if np.isnan(history.values).any():
            raise DataError(f"{history.source}: missing values; fill them first")
        block = self.model.outputs if self.model.outputs > 1 else horizon
        n, known = len(history), history
        while len(known) - n < horizon:
            k = min(block, horizon - (len(known) - n))
            z = self.forecast_at(known, [len(known) - 1], k)[0]
            known = Series(np.concatenate([known.times, known.future_times(k)]),
                           np.concatenate([known.values, z]), known.source)
        return Forecast(list(known.times[n:]), [float(v) for v in known.values[n:]])

    def evaluate(self, series: Series, start: int, end: int, scale: float) -> tuple[dict,
                                                                                  np.ndarray]:
        """Rolling-origin metrics on [start, end) (see rolling_origins) -> (metrics, preds)."""
        origins = rolling_origins(start, end, self.horizon)
        prediction = self.forecast_at(series, origins)
        truth = truth_matrix(series.values, origins, self.horizon)
        metrics = forecast_metrics(truth, prediction, scale)
        s = self.scaling.std
        metrics["loss"] = float(np.mean(((prediction - truth) / s) ** 2))  # scaled MSE
        return metrics, prediction


# ---------------------------------------------------------------------------------- the problem
@dataclass
class ForecastBatch:
    """x (B, W, F) float32 windows, y (B, K) float32 targets."""

    x: Tensor
    y: Tensor

    def to(self, device) -> ForecastBatch:
        return ForecastBatch(self.x.to(device), self.y.to(device))


class ForecastProblem:
    unit = "values"

    def __init__(self, config: Config):
        self.config = config
        self.series: Series | None = None
        self.scaling: Scaling | None = None
        self.bounds = (0, 0)
        self.scale = math.nan  # the MASE scale
        self.x = self.y = None

    def prepare(self, state: dict | None = None) -> str:
        config, f, t0 = self.config, self.config.forecast, time.time()
        season = season_of(config)
        self.series = series = load_series(config)
        a, b = self.bounds = split_bounds(len(series), f.valid_fraction, f.test_fraction)
        check_length(series, f.window, f.horizon, a, b)
        self.scaling = (Scaling.from_state_dict(state) if state
                        else Scaling.fit(series.head(a), season))
        self.scale = mase_scale(series.values[:a], season)
        features = inputs_of(series.head(a), self.scaling, f.calendar)  # the training part
        origins = np.arange(f.window - 1, a - f.horizon)
        k = f.horizon if f.strategy == "direct" else 1
        self.x = torch.tensor(windows(features, origins, f.window, f.relative),
                              dtype=torch.float32)
        self.y = torch.tensor(targets(features, origins, k, f.relative), dtype=torch.float32)
        first, last = format_time(series.times[0]), format_time(series.times[-1])
        filled = f", {series.filled} missing filled" if series.filled else ""
        return (f"data: {series.source}, {len(series)} values {first} .. {last}{filled}; "
                f"train {a} / valid {b - a} / test {len(series) - b}; {len(origins)} training "
                f"windows of {f.window}, horizon {f.horizon} ({f.strategy}); season {season}, "
                f"MASE scale {self.scale:.4g} [{time.time() - t0:.1f}s]")

    def build_model(self) -> RNNForecaster:
        return build_forecaster(self.config.model, self.config.forecast, self.x.shape[-1])

    def describe_model(self, model) -> str:
        f, m = self.config.forecast, self.config.model
        return (f"{m.cell} forecaster, {m.encoder_layers} layer(s), {f.strategy} "
                f"({model.outputs} output(s)), window {f.window}"
                f"{', relative' if f.relative else ''}{', calendar' if f.calendar else ''}, "
                f"recurrent backend {model.rnn.backend}")

    def state_dict(self) -> dict:
        return self.scaling.state_dict()

    def train_state(self) -> dict:
        return {}

    def load_train_state(self, state: dict) -> None:
        pass

    def batches(self, epoch: int, rank: int, world: int) -> list[list[int]]:
        """The training windows shuffled by (train.seed, epoch), in batches of
        forecast.batch_size; rank k takes batches k, k + world, ... (all ranks as many)."""
        g = torch.Generator().manual_seed(self.config.train.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.x), generator=g).tolist()
        size = self.config.forecast.batch_size
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        mine = batches[rank::world]
        return mine[: len(batches) // world] if world > 1 else mine

    def batch(self, key: list[int]) -> ForecastBatch:
        index = torch.tensor(key)
        return ForecastBatch(self.x[index], self.y[index])

    def loss(self, model, batch: ForecastBatch, step: int) -> tuple[Tensor, int]:
        _, summed = model(batch.x, batch.y)
        return summed, batch.y.numel()

    def log_fields(self, step: int) -> dict:
        return {}

    def _forecaster(self, model) -> Forecaster:
        return Forecaster(model, self.scaling, self.config, next(model.parameters()).device)

    def validate(self, model) -> dict:
        a, b = self.bounds
        metrics, _ = self._forecaster(model).evaluate(self.series, a, b, self.scale)
        metrics.pop("mae_by_horizon")
        return metrics

    def describe(self, metrics: dict) -> list[str]:
        return [f"MASE {metrics['mase']:.4f} MAE {metrics['mae']:.4g} RMSE "
                f"{metrics['rmse']:.4g} loss {metrics['loss']:.4f} ({metrics['origins']} "
                "origins)"]

    def report(self, run_dir: Path, device, say) -> dict:
        """The best checkpoint on valid and test (rolling origin); on test also the peers on
        the same origins, and a picture of the forecasts against the truth."""
        forecaster = Forecaster.from_checkpoint(run_dir, device=str(device))
        f, series, (a, b) = self.config.forecast, self.series, self.bounds
        valid, _ = forecaster.evaluate(series, a, b, self.scale)
        test, prediction = forecaster.evaluate(series, b, len(series), self.scale)
        origins = rolling_origins(b, len(series), f.horizon)
        say(f"valid: MASE {valid['mase']:.4f} MAE {valid['mae']:.4g} RMSE {valid['rmse']:.4g}")
        forecasts = {"model": prediction}
        table = {"model": test}
        if f.peers:
            peers = peer_forecasts(series, a, origins, f.horizon, self.scaling.season, f,
                                   say)
            truth = truth_matrix(series.values, origins, f.horizon)
            for name, (values, about) in peers.items():
                forecasts[name] = values
                table[name] = {**forecast_metrics(truth, values, self.scale), **about}
        for name, m in table.items():
            say(f"test {name}: MASE {m['mase']:.4f} MAE {m['mae']:.4g} RMSE {m['rmse']:.4g}")
        picture = _picture(series, b, origins, forecasts, run_dir / "forecast_test.png",
                           f.horizon)
        return {"valid": valid, "test": table, "mase_scale": self.scale,
                "season": self.scaling.season, "horizon": f.horizon,
                "bounds": {"train": [0, a], "valid": [a, b], "test": [b, len(series)]},
                "times": {"test_start": format_time(series.times[b]),
                          "end": format_time(series.times[-1])},
                "picture": str(picture)}


def peer_forecasts(series: Series, train_end: int, origins: np.ndarray, horizon: int,
                   season: int, f, say=lambda text: None) -> dict:
    """name -> ((n, H) forecasts at `origins`, what was chosen) for seasonal-naive, ETS and
    SARIMA, the classical models fitted on series.values[:train_end] only."""
    values, train = series.values, series.values[:train_end]
    out = {"seasonal_naive": (seasonal_naive(values, origins, horizon, season), {})}
    t0 = time.time()
    ets = fit_ets(train, season)
    spec = ets["spec"]
    out["ets"] = (ets_forecasts(ets, values, origins, horizon),
                  {"model": {k: spec[k] for k in ("trend", "damped_trend", "seasonal")},
                   "aic": ets["aic"], "tried": ets["tried"]})
    say(f"peers: ETS {out['ets'][1]['model']} (AIC {ets['aic']:.1f}) "
        f"[{time.time() - t0:.1f}s]")
    t0 = time.time()
    sarima = fit_sarima(train, season, f.sarima_d, f.sarima_seasonal_d, f.sarima_max_p,
                        f.sarima_max_q, f.sarima_max_seasonal_p, f.sarima_max_seasonal_q)
    out["sarima"] = (sarima_forecasts(sarima, values, origins, horizon),
                     {"order": list(sarima["order"]),
                      "seasonal_order": list(sarima["seasonal_order"]),
                      "aic": sarima["aic"], "tried": sarima["tried"]})
    say(f"peers: SARIMA {sarima['order']}x{sarima['seasonal_order']} (AIC "
        f"{sarima['aic']:.1f}, {len(sarima['tried'])} fitted) [{time.time() - t0:.1f}s]")
    return out


def _picture(series: Series, start: int, origins: np.ndarray, forecasts: dict, path: Path,
             horizon: int) -> Path:
    from seqlab.plots import plot_forecast

    context = max(0, start - 2 * horizon)
    return plot_forecast(series.times[context:], series.values[context:],
                         {name: (origins - context, values) for name, values in
                          forecasts.items()}, path,
                         title=f"{series.source}: test forecasts (rolling origin, "
                         f"h = 1..{horizon})")
