"""Records crowd-kit's Dawid-Skene answers on fixed, seeded votes, so the fuser's own EM
(fuser/reliability.py) can be checked against them without crowd-kit as a dependency (it
pulls transformers, nltk and pyarrow).

Run in a throwaway venv: python -m venv /tmp/ck && /tmp/ck/bin/pip install crowd-kit
  /tmp/ck/bin/python bench/dawid_skene_vs_crowdkit.py bench/results/dawid-skene-crowdkit.json
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np

ACCURACIES = [0.9, 0.8, 0.7, 0.4]
CLASSES, ROWS, SEED = 4, 600, 7


def votes() -> np.ndarray:
    rng = np.random.default_rng(SEED)
    truth = rng.integers(0, CLASSES, ROWS)
    out = np.empty((ROWS, len(ACCURACIES)), dtype=np.int64)
    for m, acc in enumerate(ACCURACIES):
        right = rng.random(ROWS) < acc
        out[:, m] = np.where(right, truth, (truth + rng.integers(1, CLASSES, ROWS)) % CLASSES)
    return out


def main() -> None:
    import crowdkit
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    v = votes()
    df = pd.DataFrame(
        [(r, m, int(v[r, m])) for r in range(ROWS) for m in range(v.shape[1])],
        columns=["task", "worker", "label"],
    )
    ds = DawidSkene(n_iter=100).fit(df)
    labels = ds.labels_.sort_index().astype(int).tolist()
    probas = ds.probas_.sort_index()[list(range(CLASSES))].to_numpy()
    priors = ds.priors_.sort_index().to_numpy()
    # errors_: rows (worker, observed label), columns true label; P(observed | true)
    errors = ds.errors_
    accuracy = [
        float(sum(priors[c] * errors.loc[(m, c), c] for c in range(CLASSES)))
        for m in range(v.shape[1])
    ]
    record = {
        "crowd_kit": crowdkit.__version__,
        "python": platform.python_version(),
        "accuracies_simulated": ACCURACIES,
        "votes": v.tolist(),
        "labels": labels,
        "probas": probas.tolist(),
        "accuracy": accuracy,
    }
    Path(sys.argv[1]).write_text(json.dumps(record) + "\n")
    print(f"crowd-kit {crowdkit.__version__}: estimated accuracy {np.round(accuracy, 4)}")


if __name__ == "__main__":
    main()
