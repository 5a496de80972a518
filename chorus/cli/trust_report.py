"""The second half of `chorus fusion report`: can the fused answer be taken at its word?

Three measures, each on the demo's digits and on a second dataset (breast cancer, three
scikit-learn members trained here; diabetes for regression), with the fuser's own code:
- calibration: ECE and Brier of each member and strategy, before and after each member's
  temperature is fitted (chorus.core.calibration) on a calibration half of the held-out rows;
- conformal: the empirical coverage and size of 90% sets (intervals) on the other half;
- reliability without labels: each member's Dawid-Skene accuracy next to its true one,
  with one member degraded by input noise as the `--noise` fault does.
Every figure is a mean over SPLITS random half/half splits of the held-out rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chorus.core.calibration import brier, expected_calibration_error, fit_temperature, temper
from chorus.core.codec import to_tensor
from chorus.core.context import CallContext, Priority
from chorus.demo.datasets import digits_split
from chorus.fuser.conformal import intervals, label_sets, nonconformity, threshold
from chorus.fuser.fusion import Tools, fuse
from chorus.fuser.reliability import Estimate, estimate
from chorus.pb import wire_pb2
from chorus.services import repository
from chorus.services.runtime import OnnxModel

SPLITS = 20
COVERAGE = 0.9
STRATEGIES = ("soft_vote", "max_confidence", "dawid_skene")
DIGITS_MEMBERS = ("logreg", "forest", "mlp")
NOISE = 6.0
CTX = CallContext.start("trust-report", Priority.BATCH, 600.0)


@dataclass
class Dataset:
    name: str
    members: dict[str, np.ndarray]
    truth: np.ndarray
    regression: bool = False


def cancer_members(seed: int = 0) -> Dataset:
    """Three differently calibrated classifiers on half of breast cancer; the other half is
    the held-out rows."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, random_state=seed, stratify=y)
    models = {
        "logreg": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "forest": RandomForestClassifier(n_estimators=50, random_state=seed, n_jobs=1),
        "bayes": GaussianNB(),
    }
    return Dataset("breast cancer", {n: m.fit(x_tr, y_tr).predict_proba(x_te)
                                     for n, m in models.items()}, y_te)  # fmt: skip


def diabetes_members(seed: int = 0) -> Dataset:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import train_test_split

    x, y = load_diabetes(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, random_state=seed)
    models = {
        "ridge": Ridge(alpha=0.5),
        "forest": RandomForestRegressor(n_estimators=50, random_state=seed, n_jobs=1),
        "gbr": GradientBoostingRegressor(random_state=seed),
    }
    return Dataset("diabetes", {n: m.fit(x_tr, y_tr).predict(x_te) for n, m in models.items()},
                   y_te, regression=True)  # fmt: skip


def digits_members(root: Path, degraded: str = "") -> Dataset:
    split = digits_split()
    out = {}
    for name in DIGITS_MEMBERS:
        model = OnnxModel(repository.load(root, name), noise=NOISE if name == degraded else 0.0)
        try:
            out[name] = model.run({"input": split.x_test}).outputs["probabilities"]
        finally:
            model.close()
    label = f"digits, {degraded} with --noise {NOISE:g}" if degraded else "digits"
    return Dataset(label, out, split.y_test)


def _call(
    members: dict[str, np.ndarray], rows: np.ndarray, policy: str, temps: dict[str, float]
) -> wire_pb2.FuseCall:
    c = wire_pb2.FuseCall(capability="report", task_id="report", policy=policy)
    kind = "regression" if next(iter(members.values())).ndim == 1 else "probabilities"
    for name, p in members.items():
        c.members.add(model=name, output_kind=kind, temperature=temps.get(name, 0.0),
                      probabilities=to_tensor("p", p[rows].astype(np.float32)))  # fmt: skip
    return c


async def fused(
    data: Dataset, rows: np.ndarray, policy: str, temps: dict[str, float] | None = None
) -> np.ndarray:
    reliability = None
    if not data.regression:
        votes = np.stack([p[rows].argmax(axis=1) for p in data.members.values()], axis=1)
        counts = estimate(votes, data.members[next(iter(data.members))].shape[1])
        reliability = Estimate(list(data.members), counts)
    tools = Tools(reliability=lambda capability: reliability)
    _, out = await fuse(_call(data.members, rows, policy, temps or {}), CTX, tools)
    return np.asarray(out.fused.probabilities, dtype=np.float64)


def _splits(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(SPLITS):
        order = rng.permutation(n)
        out.append((order[: n // 2], order[n // 2 :]))
    return out


async def calibration_means(data: Dataset) -> dict[str, np.ndarray]:
    """Per member and strategy, the mean over splits of [ECE before, after, Brier before,
    after, accuracy before, after]; members' mean temperatures under "T:<member>"."""
    sums: dict[str, np.ndarray] = {}
    y = data.truth
    for cal, ev in _splits(len(y)):
        temps = {n: fit_temperature(p[cal], y[cal]) for n, p in data.members.items()}
        for name, p in data.members.items():
            _add(sums, name, _measures(p[ev], temper(p[ev], temps[name]), y[ev]))
            _add(sums, f"T:{name}", np.array([temps[name]]))
        for strategy in STRATEGIES:
            before = await fused(data, ev, strategy)
            after = await fused(data, ev, strategy, temps)
            _add(sums, strategy, _measures(before, after, y[ev]))
    return {k: v / SPLITS for k, v in sums.items()}


async def calibration_rows(data: Dataset) -> list[str]:
    means = await calibration_means(data)
    lines = []
    for key, m in means.items():
        if key.startswith("T:"):
            continue
        label = f"**{key}**" if key in STRATEGIES else f"{key} (T {means['T:' + key][0]:.2f})"
        lines.append(f"| {data.name} | {label} | {m[0]:.4f} → {m[1]:.4f} | "
                     f"{m[2]:.4f} → {m[3]:.4f} | {m[4]:.4f} → {m[5]:.4f} |")  # fmt: skip
    return lines


def _measures(before: np.ndarray, after: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.array([
        expected_calibration_error(before, y), expected_calibration_error(after, y),
        brier(before, y), brier(after, y),
        np.mean(before.argmax(axis=1) == y), np.mean(after.argmax(axis=1) == y),
    ])  # fmt: skip


def _add(sums: dict[str, np.ndarray], key: str, value: np.ndarray) -> None:
    sums[key] = sums.get(key, np.zeros_like(value)) + value


async def conformal_row(data: Dataset, policy: str) -> str:
    """Mean empirical coverage of COVERAGE sets (intervals), and their size (width)."""
    y = data.truth
    covered, size, multi = [], [], []
    for cal, ev in _splits(len(y)):
        f_cal, f_ev = await fused(data, cal, policy), await fused(data, ev, policy)
        q = threshold(nonconformity(f_cal, y[cal], data.regression), COVERAGE)
        if data.regression:
            lo, hi = intervals(f_ev, q)
            covered.append(np.mean((lo[:, 0] <= y[ev]) & (y[ev] <= hi[:, 0])))
            size.append(float(np.mean(hi - lo)))
            multi.append(0.0)
        else:
            sets = label_sets(f_ev, q)
            covered.append(np.mean([t in s for t, s in zip(y[ev], sets, strict=True)]))
            size.append(float(np.mean([len(s) for s in sets])))
            multi.append(float(np.mean([len(s) != 1 for s in sets])))
    what = "interval width" if data.regression else "labels per set"
    flagged = "" if data.regression else f"{np.mean(multi):.1%}"
    return (f"| {data.name} | {policy} | {np.mean(covered):.1%} | {np.mean(size):.3g} {what} "
            f"| {flagged} |")  # fmt: skip


def reliability_rows(data: Dataset) -> list[str]:
    votes = np.stack([p.argmax(axis=1) for p in data.members.values()], axis=1)
    counts = estimate(votes, next(iter(data.members.values())).shape[1])
    lines = []
    for (name, p), est in zip(data.members.items(), counts.accuracy(), strict=True):
        true = float(np.mean(p.argmax(axis=1) == data.truth))
        lines.append(f"| {data.name} | {name} | {est:.4f} | {true:.4f} |")
    return lines


async def evaluate(root: Path) -> str:
    digits, cancer, diabetes = digits_members(root), cancer_members(), diabetes_members()
    degraded = digits_members(root, degraded="forest")
    lines = [
        f"Calibration (means over {SPLITS} random half/half splits of the held-out rows: "
        "temperatures fitted on one half, measured on the other; before → after)",
        "",
        "| data | member (temperature) or **strategy** | ECE | Brier | accuracy |",
        "|---|---|---|---|---|",
    ]
    for data in (digits, cancer):
        lines += await calibration_rows(data)
    lines += [
        "",
        f"Conformal {COVERAGE:.0%} sets and intervals ({SPLITS} splits)",
        "",
        "| data | strategy | empirical coverage | size | rows whose set is not one label |",
        "|---|---|---|---|---|",
    ]
    for data, policies in ((digits, ("soft_vote",)), (cancer, ("soft_vote", "majority_vote")),
                           (diabetes, ("weighted_mean", "median"))):  # fmt: skip
        for policy in policies:
            lines.append(await conformal_row(data, policy))
    lines += [
        "",
        "Reliability without labels (Dawid-Skene on all held-out votes, no feedback)",
        "",
        "| data | member | estimated accuracy | true accuracy |",
        "|---|---|---|---|",
    ]
    for data in (digits, degraded, cancer):
        lines += reliability_rows(data)
    y = degraded.truth
    every = np.arange(len(y))
    accuracy = {s: float(np.mean((await fused(degraded, every, s)).argmax(axis=1) == y))
                for s in ("soft_vote", "majority_vote", "dawid_skene")}  # fmt: skip
    lines += ["", f"Fused accuracy, {degraded.name}: "
              + ", ".join(f"{s} {a:.4f}" for s, a in accuracy.items())]  # fmt: skip
    return "\n".join(lines)
