"""problem: forecast: the series and their errors, no look-ahead, the metrics by hand, the
strategies, a tiny series learnt, the report with its peers, the predictor and the command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from seqlab.cli import main
from seqlab.config import ConfigError, config_from_dict
from seqlab.errors import DataError
from seqlab.problems.forecast import (
    Forecaster,
    ForecastProblem,
    RNNForecaster,
    Scaling,
    Series,
    ets_forecasts,
    fill_gaps,
    fit_ets,
    fit_sarima,
    forecast_metrics,
    mase_scale,
    read_csv_series,
    rolling_origins,
    sarima_forecasts,
    seasonal_naive,
    sine_series,
    statsmodels_series,
    truth_matrix,
    windows,
)

BASE = {"problem": "forecast", "model": {"bidirectional": False, "hidden_size": 16,
                                         "dropout": 0.0},
        "train": {"device": "cpu", "threads": 1}}


def config(forecast: dict | None = None, data: dict | None = None, **sections):
    raw = {**BASE, "forecast": {"series": "sine", **(forecast or {})}, **sections}
    if data:
        raw["data"] = data
    return config_from_dict(raw, environment=False)


def untrained(cfg, series: Series, seed: int = 0) -> Forecaster:
    """A forecaster with random weights and the scaling of `series`' training part."""
    torch.manual_seed(seed)
    f = cfg.forecast
    model = RNNForecaster(inputs=3 if f.calendar else 1,
                          outputs=f.horizon if f.strategy == "direct" else 1, hidden_size=8,
                          cell=cfg.model.cell, num_layers=2, dropout=0.0)
    return Forecaster(model, Scaling.fit(series.head(len(series) // 2), 12), cfg)


# ---------------------------------------------------------------------------------- metrics
def test_metrics_and_mase_scale_by_hand():
    train = np.array([1.0, 2.0, 4.0, 7.0, 11.0])
    assert mase_scale(train, 1) == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert mase_scale(train, 2) == pytest.approx((3 + 5 + 7) / 3)
    truth = np.array([[1.0, 2.0], [3.0, 4.0]])
    prediction = np.array([[2.0, 2.0], [3.0, 0.0]])  # errors 1, 0, 0, -4
    m = forecast_metrics(truth, prediction, scale=2.5)
    assert m["mae"] == pytest.approx(5 / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(17 / 4))
    assert m["mase"] == pytest.approx(5 / 4 / 2.5)
    assert m["mae_by_horizon"] == pytest.approx([0.5, 2.0])
    assert m["origins"] == 2


def test_rolling_origins_and_seasonal_naive_by_hand():
    # part [6, 10) with H = 2: origins 5..7 forecast 6-7, 7-8, 8-9
    assert rolling_origins(6, 10, 2).tolist() == [5, 6, 7]
    values = np.arange(10.0) * 10
    assert truth_matrix(values, np.array([5, 7]), 2).tolist() == [[60, 70], [80, 90]]
    # m = 3, origin 5: h = 1, 2, 3 -> y3, y4, y5; h = 4 -> y3 again (one season further back)
    assert seasonal_naive(values, np.array([5]), 4, 3).tolist() == [[30, 40, 50, 30]]
    assert seasonal_naive(values, np.array([5]), 2, 1).tolist() == [[50, 50]]  # naive


# ---------------------------------------------------------------------------------- the data
def test_gaps_are_filled_from_the_past_only():
    values = np.array([0.0, 1.0, 2.0, 10.0, 11.0, np.nan, np.nan, 12.0])
    filled, count = fill_gaps(values, 3)
    # y5 = y4 + (y2 - y1) = 12; y6 = y5 + (y3 - y2) = 20
    assert count == 2 and filled[5] == 12.0 and filled[6] == 20.0
    later = values.copy()
    later[7] = 1e6  # what comes after a gap does not change how it is filled
    assert fill_gaps(later, 3)[0][:7].tolist() == filled[:7].tolist()
    assert fill_gaps(np.array([1.0, np.nan, 3.0]), 12)[0].tolist() == [1.0, 1.0, 3.0]


def test_the_statsmodels_series_have_no_gaps_left():
    co2 = statsmodels_series("co2", 52)
    assert (len(co2), co2.filled, co2.kind) == (2284, 59, "date")
    assert not np.isnan(co2.values).any()
    assert str(co2.future_times(1)[0])[:10] == "2002-01-05"  # weekly, Saturdays
    sunspots = statsmodels_series("sunspots", 11)
    assert (len(sunspots), sunspots.filled, sunspots.kind) == (309, 0, "number")


def test_a_csv_of_dates_with_a_gap(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("day,price,note\n2020-01-01,1.5,a\n2020-01-02,,b\n\n2020-01-03,\"2.5\",c\n"
                    "2020-01-04,NA,d\n2020-01-05,3,e\n", encoding="utf-8")
    series = read_csv_series(path, "day", 2)
    assert series.values.tolist() == [1.5, 1.5, 2.5, 2.5, 3.0] and series.filled == 2
    assert series.kind == "date" and str(series.future_times(2)[1])[:10] == "2020-01-07"


CSV_ERRORS = {
    "not-a-number": ("time,value\n1,1\n2,abc\n3,3\n",
                     "s.csv:3: value 'abc' is not a number (column 'value')"),
    "unsorted": ("time,value\n1990,1\n1992,2\n1991,3\n",
                 "s.csv:4: time 1991 comes before the time on line 3 (1992); sort the file by "
                 "time"),
    "duplicated": ("time,value\n2020-01-01,1\n2020-01-02,2\n2020-01-02,3\n",
                   "s.csv:4: time 2020-01-02 is also on line 3; one value per time"),
    "bad-time": ("time,value\n1,1\nyesterday,2\n", "s.csv:3: time 'yesterday' is neither a "
                 "number nor a date (YYYY-MM-DD)"),
    "no-column": ("t,v\n1,1\n", "s.csv:1: no column 'time' in the header (t, v); set "
                  "forecast.time_column"),
    "few-cells": ("time,value\n1,1\n2\n", "s.csv:3: 1 column(s), but the header has 2 (time, "
                  "value)"),
    "empty": ("", "s.csv: empty file (a forecast CSV starts with a header line naming its "
              "columns)"),
}


@pytest.mark.parametrize("case", list(CSV_ERRORS))
def test_a_bad_csv_is_one_line_naming_the_line(case, tmp_path):
    text, message = CSV_ERRORS[case]
    (tmp_path / "s.csv").write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_csv_series(tmp_path / "s.csv")
    assert str(caught.value) == f"{tmp_path}/{message}"


def test_a_series_too_short_for_window_and_horizon_is_found_before_training(tmp_path):
    (tmp_path / "s.csv").write_text("time,value\n" + "".join(f"{t},{t}\n" for t in range(30)))
    cfg = config({"series": "csv", "window": 24, "horizon": 8},
                 data={"train": str(tmp_path / "s.csv")})
    with pytest.raises(DataError, match=r"s\.csv: 30 values are too few for forecast.window 24 "
                       r"and horizon 8: the training part \(22 values\) needs at least 32"):
        ForecastProblem(cfg).prepare()


def test_config_rules():
    with pytest.raises(ConfigError, match="a forecaster reads only the past"):
        config_from_dict({**BASE, "model": {"bidirectional": True},
                          "forecast": {"series": "co2"}})
    with pytest.raises(ConfigError, match="forecast.series 'co2' is built in"):
        config({"series": "co2"}, data={"train": "x.csv"})
    with pytest.raises(ConfigError, match="valid_fraction \\+ test_fraction must be < 1"):
        config({"valid_fraction": 0.5, "test_fraction": 0.5})
    with pytest.raises(ConfigError, match="give either data.train"):
        config({"series": "csv"})


# ---------------------------------------------------------------------------------- no look-ahead
@pytest.mark.parametrize("strategy,calendar,relative", [
    ("direct", False, True), ("direct", True, False), ("recursive", True, True),
    ("recursive", False, False)])
def test_no_look_ahead_in_the_windows(strategy, calendar, relative):
    """The forecast at an origin is the same whatever the values after it are, and changes
    when the value at the origin changes (so the test can see a leak)."""
    cfg = config({"strategy": strategy, "calendar": calendar, "relative": relative,
                  "window": 12, "horizon": 5})
    series = sine_series(80, seed=1)
    forecaster = untrained(cfg, series)
    origins = np.array([30, 41, 60])
    before = forecaster.forecast_at(series, origins)
    future = series.values.copy()
    future[42:] += np.random.default_rng(0).normal(0, 50, len(future) - 42)
    after = forecaster.forecast_at(Series(series.times, future, "perturbed"), origins)
    assert np.array_equal(before[:2], after[:2])  # origins 30 and 41: nothing they read moved
    assert not np.allclose(before[2], after[2])  # origin 60 reads the perturbed values
    at_origin = series.values.copy()
    at_origin[41] += 1.0
    moved = forecaster.forecast_at(Series(series.times, at_origin, "moved"), origins)
    assert not np.allclose(moved[1], before[1])


def test_the_window_ends_at_the_origin():
    features = np.arange(10.0)[:, None]
    assert windows(features, np.array([4]), 3, False)[0, :, 0].tolist() == [2.0, 3.0, 4.0]
    assert windows(features, np.array([4]), 3, True)[0, :, 0].tolist() == [-2.0, -1.0, 0.0]


def test_no_look_ahead_in_the_scaler_and_the_training_windows(tmp_path):
    """Scaling, MASE scale and training windows come from the training part only."""
    series = sine_series(200, seed=3)
    path = tmp_path / "s.csv"

    def prepared(values):
        path.write_text("time,value\n" + "".join(f"{t:g},{float(v)!r}\n" for t, v in
                                                 zip(series.times, values)))
        cfg = config({"series": "csv", "window": 12, "horizon": 4, "season": 12},
                     data={"train": str(path)})
        problem = ForecastProblem(cfg)
        problem.prepare()
        return problem

    one = prepared(series.values)
    a = one.bounds[0]
    later = series.values.copy()
    later[a:] = later[a:] * 3 + 100  # valid and test moved far away
    two = prepared(later)
    assert one.scaling == two.scaling and one.scale == two.scale
    assert torch.equal(one.x, two.x) and torch.equal(one.y, two.y)
    assert one.scaling.mean == pytest.approx(series.values[:a].mean())


def test_no_look_ahead_in_the_peers():
    """Seasonal-naive, ETS and SARIMA re-filtered at each origin read nothing after it."""
    series = sine_series(120, seed=2)
    train, origins, H = series.values[:80], np.array([84, 90, 100]), 4
    ets = fit_ets(train, 12)
    sarima = fit_sarima(train, 12, 1, 1, 0, 1, 0, 0)
    later = series.values.copy()
    later[91:] += 30.0
    for name, forecasts in (
            ("seasonal naive", lambda v: seasonal_naive(v, origins, H, 12)),
            ("ets", lambda v: ets_forecasts(ets, v, origins, H)),
            ("sarima", lambda v: sarima_forecasts(sarima, v, origins, H))):
        before, after = forecasts(series.values), forecasts(later)
        assert np.array_equal(before[:2], after[:2]), name
        assert not np.allclose(before[2], after[2]), name


def test_sarima_extended_origin_by_origin_equals_filtering_from_the_start():
    series = sine_series(100, seed=4)
    fit = fit_sarima(series.values[:70], 12, 1, 1, 0, 1, 0, 0)
    origins = np.array([70, 71, 75, 90])
    rolled = sarima_forecasts(fit, series.values, origins, 3)
    fresh = np.stack([fit["result"].apply(series.values[: o + 1]).forecast(3) for o in origins])
    np.testing.assert_allclose(rolled, fresh, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------- the model
def test_recursive_forecast_feeds_its_prediction_back():
    """Each recursive step equals reading the window plus the values fed back so far."""
    torch.manual_seed(0)
    model = RNNForecaster(inputs=3, outputs=1, hidden_size=8, cell="lstm", num_layers=2,
                          dropout=0.0).eval()
    x = torch.randn(2, 6, 3)
    future = torch.randn(2, 3, 2)
    out = model.forecast(x, 4, future)
    seq = x
    for k in range(4):
        y = model(seq)[0]
        assert torch.allclose(out[:, k : k + 1], y, atol=1e-5)
        if k < 3:
            seq = torch.cat([seq, torch.cat([y, future[:, k]], -1)[:, None]], dim=1)


def test_loss_is_summed_over_the_values():
    torch.manual_seed(0)
    model = RNNForecaster(inputs=1, outputs=3, hidden_size=4, cell="gru", num_layers=1,
                          dropout=0.0, loss="mae")
    x, y = torch.randn(5, 7, 1), torch.randn(5, 3)
    prediction, loss = model(x, y)
    assert loss.item() == pytest.approx((prediction - y).abs().sum().item())


def test_batches_split_the_windows_between_ranks():
    problem = ForecastProblem(config({"window": 12, "horizon": 4, "sine_length": 200,
                                      "batch_size": 8}))
    problem.prepare()
    both = problem.batches(3, 0, 2) + problem.batches(3, 1, 2)
    flat = [i for b in both for i in b]
    assert len(flat) == len(set(flat)) and len(problem.batches(3, 0, 2)) == len(
        problem.batches(3, 1, 2))
    assert problem.batches(3, 0, 1) == problem.batches(3, 0, 1) != problem.batches(4, 0, 1)


# ---------------------------------------------------------------------------------- learnt
TINY = {"series": "sine", "sine_length": 240, "window": 24, "horizon": 6,
        "sarima_max_p": 1, "sarima_max_q": 0, "sarima_max_seasonal_q": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from seqlab.train import train

    cfg = config_from_dict({**BASE, "model": {**BASE["model"], "hidden_size": 24},
                            "forecast": TINY,
                            "train": {**BASE["train"], "max_epochs": 40, "lr": 0.01,
                                      "valid_every": 40, "log_every": 40}},
                           environment=False)
    run = tmp_path_factory.mktemp("forecast") / "run"
    results = train(cfg, run, quiet=True)
    return run, results


def test_a_tiny_series_is_learnt_and_reported_with_its_peers(trained):
    run, results = trained
    test = results["test"]
    # seasonal-naive on a trending sine: MASE about 1; the model must learn the shape
    assert test["model"]["mase"] < 0.6 < test["seasonal_naive"]["mase"]
    assert set(test) == {"model", "seasonal_naive", "ets", "sarima"}
    assert test["sarima"]["order"][1] == 1 and test["ets"]["aic"] < 0
    assert results["valid"]["mase"] < 0.6
    saved = json.loads((run / "results.json").read_text())
    assert saved["test"]["model"]["mase"] == test["model"]["mase"]
    assert (run / "forecast_test.png").stat().st_size > 10_000


def test_the_predictor_continues_the_series(trained):
    run, _ = trained
    forecaster = Forecaster.from_checkpoint(run, device="cpu")
    series = sine_series(240, seed=1)  # the training series (train.seed 1)
    forecast = forecaster.predict(series)
    assert forecast.times == [240.0, 241.0, 242.0, 243.0, 244.0, 245.0]
    expected = 10 + 0.02 * np.arange(240, 246) + 2 * np.sin(2 * np.pi * np.arange(240, 246) / 12)
    assert np.abs(np.array(forecast.values) - expected).mean() < 0.5
    longer = forecaster.predict(series, 15)  # a direct model chains blocks of H
    assert longer.values[:6] == forecast.values and len(longer.values) == 15
    assert forecaster.predict(series.values.tolist(), 2).values == forecast.values[:2]


def test_the_forecast_command_prints_time_and_value(trained, tmp_path, capsys):
    run, _ = trained
    series = sine_series(240, seed=1)
    path = tmp_path / "history.csv"
    path.write_text("value,time\n" + "".join(f"{float(v)!r},{t:g}\n" for t, v in
                                             zip(series.times, series.values)))
    assert main(["forecast", str(run), "--data", str(path), "--horizon", "3",
                 "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["240", "241", "242"]
    expected = Forecaster.from_checkpoint(run, device="cpu").predict(series, 3).values
    assert [float(line.split("\t")[1]) for line in lines] == pytest.approx(expected, rel=1e-5)
    assert main(["forecast", str(run), "--horizon", "0"]) == 2
    assert "--horizon 0: must be >= 1" in capsys.readouterr().err


def test_resume_mid_epoch_equals_an_uninterrupted_run(tmp_path):
    """No train_state: the batches are a function of (seed, epoch), dropout draws from the
    torch RNG the loop saves; a run resumed mid-epoch ends with the same weights."""
    from seqlab.checkpoint import load_checkpoint
    from seqlab.train import train

    def cfg(steps):
        return config_from_dict({**BASE, "model": {**BASE["model"], "dropout": 0.2},
                                 "forecast": {**TINY, "peers": False},
                                 "train": {**BASE["train"], "max_steps": steps,
                                           "valid_every": 7}}, environment=False)

    train(cfg(14), tmp_path / "whole", quiet=True)
    train(cfg(7), tmp_path / "resumed", quiet=True)  # 5 batches an epoch: stops mid-epoch 2
    train(cfg(14), tmp_path / "resumed", resume=True, quiet=True)
    whole = load_checkpoint(tmp_path / "whole" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert resumed["progress"]["step"] == whole["progress"]["step"] == 14
    for name, tensor in whole["model"].items():
        torch.testing.assert_close(resumed["model"][name], tensor, rtol=0, atol=0)


@pytest.mark.parametrize("name,strategy", [("co2", "direct"), ("sunspots", "recursive")])
def test_the_recipes_load(name, strategy):
    from pathlib import Path

    from seqlab.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / f"forecast_{name}.yaml")
    assert (cfg.problem, cfg.forecast.series, cfg.forecast.strategy) == ("forecast", name,
                                                                         strategy)
    assert cfg.train.threads == 1 and not cfg.model.bidirectional
