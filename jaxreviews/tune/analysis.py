"""What a study says about where to look next: the best trials, each parameter's best value, whether
it sits at the edge of its range, the proposed next range, and parameter importance.

Edges and next ranges are judged on each parameter's own scale (log for "log" and "pow2"):

- the *good* trials are the best quarter of the complete trials (at least `MIN_GOOD`);
- a numeric parameter is *at the edge* when its best value lies in the outer `EDGE_FRACTION` of
  the range at the low or the high end (ints and powers of two: is the lowest or highest value);
- at an edge, the next range moves past it: it keeps the good trials' side and reaches
  `EXTEND_FRACTION` of the old span beyond the edge (a learning rate best at 1e-2 of 1e-4..1e-2
  becomes about 3e-4..1e-1);
- inside the range, the next range narrows around the good trials (their span, plus a tenth of the
  old span on each side, at least a quarter of the old span), within the old range;
- choices keep the values some good trial took (all of them while fewer than `MIN_GOOD` trials
  are complete).

Bounds stay meaningful: rates in [0, 1) keep to it, ints and powers of two are rounded outwards
and stay >= 1 when they started there. Importance is Optuna's fANOVA (a random forest over the
complete trials' parameters; needs scikit-learn and at least 3 trials), over the parameters every
complete trial has (a conditional parameter is left out of it).
"""
from __future__ import annotations

import dataclasses
import math

import optuna
from optuna.trial import TrialState

from jaxreviews.tune import space as space_lib

EDGE_FRACTION = 0.1
EXTEND_FRACTION = 0.5
MIN_GOOD = 3


@dataclasses.dataclass
class ParameterFinding:
    name: str
    kind: str
    low: float | None
    high: float | None
    best: object
    edge: str  # "low" | "high" | "" (inside) | "n/a" (choices, or too few trials)
    proposed: space_lib.Parameter
    tried: int  # complete trials that had this parameter
    note: str = ""

    @property
    def proposed_range(self) -> str:
        p = self.proposed
        if p.kind == "choice":
            return "{" + ", ".join(map(str, p.choices)) + "}"
        return f"{_fmt(p.low)} .. {_fmt(p.high)}"

    @property
    def range(self) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(map(str, self.choices_tried)) + "}" if self.choices_tried else ""
        return f"{_fmt(self.low)} .. {_fmt(self.high)}"

    choices_tried: tuple = ()


def _fmt(x) -> str:
    if isinstance(x, float) and not x.is_integer():
        return f"{x:.3g}"
    return str(int(x)) if isinstance(x, float) else str(x)


def complete_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value) and t.user_attrs.get("same_as") is None]


def ranked(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete trials, best first."""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(complete_trials(study), key=lambda t: -t.value if maximize else t.value)


def _forward(parameter: space_lib.Parameter, x: float) -> float:
    return math.log(x) if parameter.log_scale else float(x)


def _backward(parameter: space_lib.Parameter, y: float) -> float:
    return math.exp(y) if parameter.log_scale else float(y)


def _rounded(parameter: space_lib.Parameter, low: float, high: float) -> tuple[float, float]:
    """Bounds rounded outwards to the parameter's values, kept meaningful."""
    if parameter.kind == "pow2":
        low, high = 2.0 ** math.floor(math.log2(max(low, 1.0))), 2.0 ** math.ceil(math.log2(max(high, 1.0)))
        if low == high:
            high = low * 2
    elif parameter.kind == "int":
        low, high = math.floor(low), math.ceil(high)
        if parameter.low >= 1:
            low = max(1, low)
        if low == high:
            high = low + 1
    elif parameter.kind == "float" and parameter.low >= 0 and parameter.high <= 1:
        low, high = max(0.0, low), min(0.95 if parameter.high < 1 else 1.0, high)
        low, high = float(f"{low:.3g}"), float(f"{high:.3g}")
    elif parameter.kind == "float" and parameter.low >= 0:
        low = max(0.0, low)
    if parameter.kind in ("log", "float"):
        low, high = float(f"{low:.3g}"), float(f"{high:.3g}")
    return low, high


def find(parameter: space_lib.Parameter, trials: list[optuna.trial.FrozenTrial], good_count: int) -> ParameterFinding:
    """The finding for one parameter over the ranked complete trials (best first)."""
    having = [t for t in trials if parameter.optuna_name in t.params]
    values = [parameter.value(t.params[parameter.optuna_name]) for t in having]
    if not having:
        return ParameterFinding(parameter.name, parameter.kind, parameter.low, parameter.high, None, "n/a",
                                parameter, 0, "no complete trial had it")
    best = values[0]
    good = values[:max(MIN_GOOD, good_count)] if len(values) >= MIN_GOOD else values
    if parameter.kind == "choice":
        keep = list(parameter.choices) if len(values) < MIN_GOOD else \
            [c for c in parameter.choices if c in good or c not in values]
        proposed = dataclasses.replace(parameter, choices=tuple(keep))
        finding = ParameterFinding(parameter.name, parameter.kind, None, None, best, "n/a", proposed, len(having))
        finding.choices_tried = tuple(parameter.choices)
        return finding
    lo, hi = _forward(parameter, parameter.low), _forward(parameter, parameter.high)
    span = hi - lo
    b = _forward(parameter, best)
    if parameter.kind in ("int", "pow2"):
        edge = "low" if best <= parameter.low else "high" if best >= parameter.high else ""
    else:
        edge = "low" if b <= lo + EDGE_FRACTION * span else "high" if b >= hi - EDGE_FRACTION * span else ""
    g = [_forward(parameter, v) for v in good]
    g_lo, g_hi = min(g), max(g)
    if edge == "high":
        new_lo, new_hi = max(lo, min(g_lo, b) - 0.1 * span), hi + EXTEND_FRACTION * span
        note = f"best at the top of the range: moved past {_fmt(parameter.high)}"
    elif edge == "low":
        new_lo, new_hi = lo - EXTEND_FRACTION * span, min(hi, max(g_hi, b) + 0.1 * span)
        note = f"best at the bottom of the range: moved past {_fmt(parameter.low)}"
    else:
        new_lo, new_hi = max(lo, g_lo - 0.1 * span), min(hi, g_hi + 0.1 * span)
        if new_hi - new_lo < 0.25 * span:  # too narrow: a quarter of the old span around the best
            new_lo, new_hi = max(lo, b - 0.125 * span), min(hi, b + 0.125 * span)
        note = "inside the range: narrowed around the good trials"
    low, high = _rounded(parameter, _backward(parameter, new_lo), _backward(parameter, new_hi))
    if parameter.kind == "log":
        low = max(low, 1e-12)
    if not low < high:
        low, high = parameter.low, parameter.high
    proposed = dataclasses.replace(parameter, low=low, high=high)
    return ParameterFinding(parameter.name, parameter.kind, parameter.low, parameter.high, best, edge, proposed,
                            len(having), note)


def findings(study: optuna.Study, space: space_lib.Space) -> list[ParameterFinding]:
    trials = ranked(study)
    good_count = max(1, len(trials) // 4)
    return [find(parameter, trials, good_count) for parameter in space]


def next_space(space: space_lib.Space, found: list[ParameterFinding]) -> space_lib.Space:
    by_name = {f.name: f.proposed for f in found}
    return space_lib.Space(tuple(by_name.get(p.name, p) for p in space))


def importance(study: optuna.Study, space: space_lib.Space) -> tuple[dict[str, float], str]:
    """({parameter name: fANOVA importance}, a note when it could not be computed)."""
    trials = complete_trials(study)
    if len(trials) < 3:
        return {}, "parameter importance needs at least 3 complete trials"
    common = set.intersection(*(set(t.params) for t in trials))
    varied = [name for name in common if len({str(t.params[name]) for t in trials}) > 1]
    if not varied:
        return {}, "no parameter took two values in the complete trials"
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        raw = optuna.importance.get_param_importances(study, evaluator=evaluator, params=sorted(varied))
    except Exception as error:  # scikit-learn missing, degenerate trials
        return {}, f"fANOVA failed: {type(error).__name__}: {error}"
    by_name = space.by_optuna_name()
    return {by_name[name].name if name in by_name else name: float(v) for name, v in raw.items()}, ""


def summary(study: optuna.Study) -> dict:
    trials = study.get_trials(deepcopy=False)
    seconds = [float(t.user_attrs.get("seconds", 0.0)) for t in trials if t.state.is_finished()]
    finished = [t for t in trials if t.state.is_finished() and t.datetime_start and t.datetime_complete]
    wall = None
    if finished:
        wall = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
    counts = {state.name.lower(): sum(1 for t in trials if t.state == state) for state in TrialState}
    return {"trials": len(trials), **counts, "trial_seconds": round(sum(seconds), 1),
            "wall_seconds": None if wall is None else round(wall, 1),
            "trials_per_hour": None if not wall else round(len(finished) * 3600 / wall, 1)}
