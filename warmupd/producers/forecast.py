"""Per-term forecasts (SPEC §8): ETS with honest prediction intervals, a short-series fallback.

:func:`forecast_term` is pure, deterministic and picklable; the jobs layer sends it to the process
pool. This module is the only statsmodels user, and it imports statsmodels, pandas and numpy inside
the worker-side fit only: the daemon imports this module to name the function and to read
:data:`PREDICTION_ENGINE_VERSION`, and must stay small (SPEC P6). Everything else here is standard
library arithmetic on at most a few thousand floats.

Method and constants follow the offline benchmark in ``notes/FORECAST-AND-INSIGHTS.md`` §2.4; the
figures that back them are produced by ``python -m bench.forecast_eval`` (docs/BENCHMARKS.md, P9).
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from typing import Any, Literal

from warmupd.clock import ms_to_iso
from warmupd.errors import InsufficientData, ProducerError
from warmupd.models import short_hash
from warmupd.producers.cadence import Cadence, infer_cadence, parse_dates
from warmupd.producers.forecast_summary import Path, summarise

PREDICTION_ENGINE_VERSION = "3"
"""Part of every cache entry's "up to date" check: bump it whenever outputs change for one input.

The site's engine was version "1"; this engine's numbers and fields differ, so it started at "2".
"3": spikes are winsorised before the fit, and the fit runs on raw or log1p data by AICc.
"""

# Two-sided standard normal quantiles for the fallback's Gaussian intervals.
_Z80 = 1.2815515655446004
_Z95 = 1.959963984540054

# Below this many points ETS is not fitted (SPEC §8): seasonal naive or naive instead.
_MIN_ETS_POINTS = 14


def warm_up() -> None:
    """Import statsmodels' ETS now; the pool's worker initializer calls this once per worker.

    The import costs 2–3 s, which would otherwise land on the first forecast of each worker.
    """
    import statsmodels.tsa.exponential_smoothing.ets  # noqa: F401


def forecast_term(
    *,
    dates: Sequence[str],
    values: Sequence[float],
    term: Literal["termA", "termB"],
    horizon_days: int,
    min_points: int,
    generated_at_ms: int,
    source_updated_ms: int | None,
) -> dict[str, Any]:
    """Forecast one term's series ``horizon_days`` ahead at the series' own cadence.

    :param dates: ISO dates, strictly ascending, one per value.
    :param values: search interest on the 0–100 index, finite.
    :param term: which term of the comparison this is (goes into ``id`` and the hash).
    :param horizon_days: the horizon in days; it becomes ``ceil(horizon_days / step)`` steps.
    :param min_points: fewer points than this raise :class:`InsufficientData`.
    :param generated_at_ms: the run's wall time, rendered as ``generatedAt`` (not hashed).
    :param source_updated_ms: when the comparison's series last changed, or ``None``.
    :returns: the SPEC §8 forecast bundle (camelCase JSON-ready dict).
    :raises InsufficientData: when there are fewer than ``min_points`` (and fewer than 2) points.
    :raises ProducerError: on mismatched lengths, non-finite values, bad dates or an unsupported
        cadence.
    """
    if len(dates) != len(values):
        raise ProducerError(f"{len(dates)} dates but {len(values)} values")
    n = len(values)
    if n < max(min_points, 2):
        raise InsufficientData(f"{term}: {n} points, at least {max(min_points, 2)} needed")
    y = [float(v) for v in values]
    if not all(math.isfinite(v) for v in y):
        raise ProducerError(f"{term}: series contains a non-finite value")
    if horizon_days < 1:
        raise ProducerError(f"horizon_days must be at least 1, got {horizon_days}")
    days = parse_dates(list(dates))
    cadence = infer_cadence(days)
    steps = cadence.steps_for(horizon_days)

    fit_failed = False
    if n < _MIN_ETS_POINTS or max(y) == min(y):
        # A constant series has nothing to fit (ETS's likelihood is degenerate); naive is exact.
        path = fallback_path(y, cadence, steps)
    else:
        try:
            path = ets_path(y, cadence, steps)
        except (ValueError, ArithmeticError, ProducerError):
            # statsmodels signals numerical trouble with ValueError/LinAlgError (a ValueError) or a
            # non-finite result (checked in ets_path); the item still gets an honest naive band.
            fit_failed = True
            path = fallback_path(y, cadence, steps)

    hashed_input = {
        "engineVersion": PREDICTION_ENGINE_VERSION,
        "term": term,
        "dates": [d.isoformat() for d in days],
        "values": [round(v, 6) + 0.0 for v in y],
        "horizonDays": horizon_days,
    }
    forecast_hash = short_hash(hashed_input)
    bundle = summarise(
        y=y,
        days=days,
        cadence=cadence,
        path=path,
        fit_failed=fit_failed,
    )
    return {
        "id": f"forecast-{term}-{forecast_hash}",
        "term": term,
        **bundle,
        "forecastHash": forecast_hash,
        "generatedAt": ms_to_iso(generated_at_ms),
        "dataFreshness": {
            "lastUpdatedAt": ms_to_iso(source_updated_ms),
            "source": "prediction-engine",
        },
        "predictionEngineVersion": PREDICTION_ENGINE_VERSION,
    }


def seasonal_period(n: int, cadence: Cadence) -> int:
    """The seasonal period ETS fits for ``n`` points, or 0 for none (SPEC §8)."""
    return cadence.season if n >= cadence.min_seasonal_points else 0


def interval_widening(n: int) -> float:
    """Factor applied to the model's interval half-widths.

    ETS's analytic intervals ignore parameter uncertainty and the fat tails of search data; the
    benchmark measured raw coverage of 78 %/90 % overall and 64 %/82 % on 30-point daily series.
    """
    return 1.5 if n < 60 else 1.2


# A point is a spike when it is this many robust σ off both its centred rolling median and its
# one-step ETS prediction (same side). Chosen on a development set disjoint from the benchmark's.
_SPIKE_SIGMAS = 2.5
_SPIKE_WINDOW = {"daily": 7, "weekly": 5, "monthly": 5}
_MAD_TO_SIGMA = 1.4826


def _fit(y: Any, m: int, *, log: bool, start: Any = None) -> Any:
    """One ETS(A,Ad,·) fit on ``y`` (or on ``log1p(y)``); returns the statsmodels results."""
    import numpy as np
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    z = np.log1p(y) if log else y
    model = ETSModel(
        pd.Series(z, dtype=float),  # get_prediction needs an index (fails on a bare ndarray)
        error="add",
        trend="add",
        damped_trend=True,
        seasonal="add" if m else None,
        seasonal_periods=m or None,
        # With 52 seasonal states the estimated initialisation is slow and unstable.
        initialization_method="heuristic" if m >= 24 else "estimated",
    )
    with warnings.catch_warnings():
        # Convergence and start-value warnings are routine on short noisy series and say nothing
        # the interval width does not; pytest runs with filterwarnings=error.
        warnings.simplefilter("ignore")
        return model.fit(disp=False, start_params=start)


def despike(y: Any, residuals: Any, cadence: Cadence) -> Any:
    """Winsorise one-off spikes to the edge of their rolling-median band; ``y`` if there are none.

    Search interest has news spikes that drag ETS's level and trend for weeks. A spike must stand
    out from *both* a centred rolling median (robust to the spike itself and to level shifts) and
    the fit's one-step prediction (which knows the trend and the seasonal cycle, so that a smooth
    seasonal peak, far from its rolling median, is not mistaken for one).

    :param y: the series as a float ndarray.
    :param residuals: the one-step residuals of an ETS fit on ``y``.
    :returns: a new ndarray (or ``y`` itself when nothing is flagged).
    """
    import numpy as np

    n, width = len(y), _SPIKE_WINDOW[cadence.name]
    # Centred windows, shifted inwards at both ends so that they keep their full width: a
    # truncated window at the end of the series would be half spike and follow it.
    starts = [max(0, min(t - width // 2, n - width)) for t in range(n)]
    median = np.array([np.median(y[s : s + width]) for s in starts])
    off = y - median
    # Index points are integers: a robust σ below 1 would flag ordinary rounding noise (and, for
    # the fit's residuals, every point of a series the model reproduces almost exactly).
    sigma_off = max(1.0, _MAD_TO_SIGMA * float(np.median(np.abs(off - np.median(off)))))
    res = np.asarray(residuals, dtype=float)
    sigma_res = max(1.0, _MAD_TO_SIGMA * float(np.median(np.abs(res - np.median(res)))))
    k = _SPIKE_SIGMAS
    far_off = np.abs(off) > k * sigma_off
    surprising = (np.abs(res) > k * sigma_res) & (np.sign(off) == np.sign(res))
    flagged = np.zeros(n, dtype=bool)
    for t in range(n):
        # Right after a spike the fit's prediction is itself dragged (the residual of the spike's
        # decaying tail is even negative), so there the rolling median alone decides. Without this
        # a spike in the last days would be clipped at its peak only, leaving a ramp to extend.
        after_spike = t > 0 and flagged[t - 1] and off[t] * off[t - 1] > 0
        flagged[t] = far_off[t] and (surprising[t] or after_spike)
    if not flagged.any():
        return y
    band = np.clip(y, median - k * sigma_off, median + k * sigma_off)
    return np.where(flagged, band, y)


def ets_path(y: list[float], cadence: Cadence, steps: int) -> Path:
    """ETS(A,Ad,·) on the despiked series, raw or log1p by AICc; widened analytic intervals.

    Steps: fit the SPEC model on the data; winsorise spikes that both a rolling median and that
    fit's residuals single out (:func:`despike`) and refit if any were; fit the same model to
    ``log1p`` of the cleaned series; keep the fit with the lower AICc on the data's own scale
    (the log fit's likelihood gains the transform's Jacobian, ``Σ log1p(y)``). The log fit suits
    series whose noise grows with the level, the raw fit smooth ones; AICc tells them apart
    in-sample. Intervals are the chosen fit's analytic 80 %/95 % bands, widened about the mean (in
    log space for the log fit, then mapped back, which keeps them asymmetric like the data).

    :raises ValueError: (or a subclass) when statsmodels cannot fit the series.
    :raises ProducerError: when the fit produced non-finite numbers.
    """
    import numpy as np

    n = len(y)
    m = seasonal_period(n, cadence)
    raw = np.asarray(y, dtype=float)
    with warnings.catch_warnings():
        # Convergence and start-value warnings are routine on short noisy series and say nothing
        # the interval width does not; pytest runs with filterwarnings=error.
        warnings.simplefilter("ignore")
        first = _fit(raw, m, log=False)
        clean = despike(raw, first.resid, cadence)
        despiked = clean is not raw
        fit_raw = _fit(clean, m, log=False, start=first.params) if despiked else first
        # log1p needs y > -1; the index is never negative, but the engine must not assume it.
        fit_log = _fit(clean, m, log=True) if float(clean.min()) >= 0 else None
        log = fit_log is not None and bool(
            fit_log.aicc + 2.0 * float(np.sum(np.log1p(clean))) < fit_raw.aicc
        )
        chosen = fit_log if log and fit_log is not None else fit_raw
        prediction = chosen.get_prediction(start=n, end=n + steps - 1)
        frame80 = prediction.summary_frame(alpha=0.20)
        frame95 = prediction.summary_frame(alpha=0.05)
    mean = np.asarray(frame80["mean"], dtype=float)
    widen = interval_widening(n)

    def widened(frame: Any, column: str) -> list[float]:
        bound = mean + widen * (np.asarray(frame[column], dtype=float) - mean)
        return [float(v) for v in (np.expm1(bound) if log else bound)]

    label = f"A,Ad,{'A' + str(m) if m else 'N'}"
    path = Path(
        model=f"ets({label}){'/log1p' if log else ''}",
        mean=[float(v) for v in (np.expm1(mean) if log else mean)],
        lower80=widened(frame80, "pi_lower"),
        upper80=widened(frame80, "pi_upper"),
        lower95=widened(frame95, "pi_lower"),
        upper95=widened(frame95, "pi_upper"),
        fallback=False,
    )
    numbers = path.mean + path.lower80 + path.upper80 + path.lower95 + path.upper95
    if len(path.mean) != steps or not all(math.isfinite(v) for v in numbers):
        raise ProducerError("ETS fit produced non-finite forecasts")
    return path


def fallback_path(y: list[float], cadence: Cadence, steps: int) -> Path:
    """Seasonal naive (daily data with more than 7 points) or naive, with σ·√k intervals.

    σ is the RMS of the one-step (seasonal) differences, at least 1 index point so that a flat
    series still gets a visible band; k counts the seasonal cycles ahead (every step for naive).
    """
    n = len(y)
    m = cadence.season if cadence.name == "daily" and n > cadence.season else 1
    diffs = [y[i] - y[i - m] for i in range(m, n)]
    sigma = max(1.0, math.sqrt(statistics.fmean(d * d for d in diffs))) if diffs else 1.0
    mean: list[float] = []
    lower80: list[float] = []
    upper80: list[float] = []
    lower95: list[float] = []
    upper95: list[float] = []
    for h in range(1, steps + 1):
        mu = y[n - m + (h - 1) % m]
        se = sigma * math.sqrt((h - 1) // m + 1)
        mean.append(mu)
        lower80.append(mu - _Z80 * se)
        upper80.append(mu + _Z80 * se)
        lower95.append(mu - _Z95 * se)
        upper95.append(mu + _Z95 * se)
    return Path(
        model=f"snaive{m}" if m > 1 else "naive",
        mean=mean,
        lower80=lower80,
        upper80=upper80,
        lower95=lower95,
        upper95=upper95,
        fallback=True,
    )
