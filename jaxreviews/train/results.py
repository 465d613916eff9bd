"""results.json: one schema for every run (`RunResults`), whatever its number of members.

    results = RunResults.from_json(json.load(open("runs/han_upa/results.json")))
    results.test["rmse"], results.members_mean["rmse"], results.num_members
    print(format_results(results))

`test` and `validation` are the metrics of what the run predicts: its one member, or the ensemble
of its members (mean probabilities and ratings). `members` are each member's test metrics,
`members_mean` / `members_std` their mean and sample std (0 for one member). `baselines` are the
majority class and the mean rating fitted on the training split; `reference` what simple models
reach on the default synthetic corpus. The timings add up over every session of a resumed run.
`schema_version` says which schema a file has; `from_json` reads the unversioned files older runs
wrote too.
"""
from __future__ import annotations

import dataclasses
import json
import os

SCHEMA_VERSION = 2


@dataclasses.dataclass
class RunResults:
    model: str
    test: dict
    validation: dict
    members: list[dict]
    members_validation: list[dict]
    members_mean: dict
    members_std: dict
    member_seeds: list[int]
    member_best_steps: list[int]
    baselines: dict
    param_checksum: str
    best_step: int
    steps: int
    stopped_early: bool
    parameters: int  # one member's
    member_hyperparameters: list[dict] = dataclasses.field(default_factory=list)  # a population's values
    snapshot_steps: list[int] = dataclasses.field(default_factory=list)
    reference: dict | None = None
    data: dict = dataclasses.field(default_factory=dict)
    layout: str = "padded"
    buckets: list = dataclasses.field(default_factory=list)
    padding_efficiency: float | None = None
    compilations: dict = dataclasses.field(default_factory=dict)
    compile: dict = dataclasses.field(default_factory=dict)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    docs_per_s: float = 0.0
    model_docs_per_s: float = 0.0  # members x docs/s
    accounting: dict | None = None
    trained_in: dict | None = None  # a sweep trial trained in a batch of trials: where, and which members
    schema_version: int = SCHEMA_VERSION

    @property
    def num_members(self) -> int:
        return len(self.members)

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "num_members": self.num_members}

    @classmethod
    def from_json(cls, tree: dict) -> RunResults:
        tree = dict(tree)
        tree.pop("num_members", None)
        if "schema_version" not in tree:  # written before schemas: a single run had no member keys
            tree = _from_unversioned(tree)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in tree.items() if k in fields})

    def save(self, path: str) -> None:
        """Writes results.json whole (a reader never sees half a file)."""
        temporary = path + ".tmp"
        with open(temporary, "w") as f:
            json.dump(self.to_json(), f, indent=2, sort_keys=True)
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str) -> RunResults:
        with open(path) as f:
            return cls.from_json(json.load(f))


def _from_unversioned(tree: dict) -> dict:
    tree = dict(tree)
    tree.pop("ensemble", None)
    tree.pop("num_seeds", None)
    if "members" not in tree:
        tree.update(members=[tree["test"]], members_validation=[tree["validation"]],
                    members_mean={k: v for k, v in tree["test"].items() if k != "reviews"},
                    members_std={k: 0.0 for k in tree["test"] if k != "reviews"},
                    member_seeds=[], member_best_steps=[tree.get("best_step", -1)])
    tree["schema_version"] = 1
    return tree


def metrics_row(values: dict, columns) -> dict:
    return {k: values[k] for k in columns if isinstance(values.get(k), (int, float))}


def format_results(results: RunResults) -> str:
    """The closing table: the model (its members as mean ± std beside the ensemble) and the
    baselines, then the run's figures."""
    columns = ("accuracy", "macro_f1", "rmse", "mae")
    rows = []
    if results.num_members > 1:
        rows.append((f"{results.model} ensemble of {results.num_members} (test)",
                     {k: f"{results.test[k]:.4f}" for k in columns if k in results.test}))
        rows.append((f"{results.model} members (test, mean ± std)",
                     {k: f"{results.members_mean[k]:.4f}±{results.members_std[k]:.4f}" for k in columns
                      if k in results.members_mean}))
    else:
        rows.append((f"{results.model} (test)", results.test))
    rows += [(f"baseline: {name}", values) for name, values in results.baselines.items() if "accuracy" in values]
    for name, values in (results.reference or {}).items():
        if isinstance(values, dict):
            rows.append((f"reference: {name}", values))
    width = 16 if results.num_members > 1 else 10
    lines = [f"{'':40}" + "".join(f"{c:>{width}}" for c in columns)]
    for name, values in rows:
        cells = [values[k] if isinstance(values.get(k), str) else
                 f"{values[k]:.4f}" if isinstance(values.get(k), (int, float)) else "-" for k in columns]
        lines.append(f"{name:40}" + "".join(f"{c:>{width}}" for c in cells))
    lines.append(f"param_checksum {results.param_checksum}")
    lines.append(f"compilations {results.compilations}")
    if results.compile:
        members = f", {results.model_docs_per_s:,.0f} model-docs/s" if results.num_members > 1 else ""
        rate = (results.accounting or {}).get("eval_docs_per_s")
        evaluated = f" ({rate:,.0f} docs/s)" if rate else ""
        lines.append(f"training {results.train_seconds:.1f}s ({results.docs_per_s:,.0f} docs/s{members}), "
                     f"evaluation {results.eval_seconds:.1f}s{evaluated}, "
                     f"checkpoints {results.checkpoint_seconds:.1f}s, "
                     f"compilation {results.compile['seconds']:.1f}s ({results.compile['programs']} programs "
                     f"compiled, {results.compile['cache_reads']} read from the cache)")
    if results.accounting:
        a = results.accounting
        mfu = "n/a on CPU" if a.get("mfu") is None else f"{a['mfu']:.1%}"
        lines.append(f"per device: {a['docs_per_s_per_device']:,.0f} docs/s, {a['tokens_per_s_per_device']:,.0f} "
                     f"tokens/s; {a['flops_per_step'] / 1e9:,.3f} GFLOP a step (counted matmuls), "
                     f"{a['achieved_flops_per_s'] / 1e9:,.2f} GFLOP/s achieved, MFU {mfu}")
    return "\n".join(lines)
