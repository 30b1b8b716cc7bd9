"""The linear probe's solver (probes/lbfgs.py) against scikit-learn, per layer of one
feature store, single thread: the same features, standardisation, splits, weight decays
and choice of the decay on validation loss.

For each layer, the seconds of
- ours: the default linear probe's fit of that layer alone (every run and decay together);
- scikit-learn cold: `LogisticRegression` (lbfgs, tol 1e-4) at C = 1 / (decay * n_train),
  each decay from scratch;
- scikit-learn path: the same, warm-started from the strongest penalty down (what
  `LogisticRegressionCV` does);
and each one's chosen decays (one per run) and mean test accuracy. Then the whole store as
its train job fits it (every layer together) against the sum of scikit-learn's.

Reads the stores of a finished default run (`make run`, or benchmarks/default_run.py
--keep DIR, then --results DIR/results):

    .venv/bin/python benchmarks/linear_fit.py --store shapes/effnet/edges
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from common import REPO, default_config
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from threadpoolctl import threadpool_limits

from visual_ablation.data import splits
from visual_ablation.data.splits import TEST, TRAIN, VAL
from visual_ablation.features import feature_store
from visual_ablation.plan.config import resolve
from visual_ablation.probes import fitting, stacking, training
from visual_ablation.probes.standardisation import standardise


def scikit_learn(x, labels, split_of, decays, n_classes, warm: bool):
    """(seconds, chosen decay per run, mean test accuracy) of LogisticRegression."""
    chosen, accuracy, seconds = [], [], 0.0
    for split in split_of.values():
        train = split == TRAIN
        z = standardise(x, train)
        fit = LogisticRegression(max_iter=10_000, tol=1e-4, warm_start=warm)
        best = None
        for decay in sorted(decays, reverse=True):
            t0 = time.perf_counter()
            fit.set_params(C=1.0 / (decay * train.sum())).fit(z[train], labels[train])
            seconds += time.perf_counter() - t0
            loss = log_loss(
                labels[split == VAL], fit.predict_proba(z[split == VAL]), labels=range(n_classes)
            )
            if best is None or loss < best[0]:
                test = fit.predict(z[split == TEST]) == labels[split == TEST]
                best = (loss, decay, float(test.mean()))
        chosen.append(best[1])
        accuracy.append(best[2])
    return seconds, chosen, float(np.mean(accuracy))


def ours(features, labels, split_of, probe, n_classes):
    """(seconds, chosen decay per run, mean test accuracy) of the probe's solver."""
    t0 = time.perf_counter()
    heads, _ = fitting.train(features, labels, split_of, n_classes, probe, list(split_of))
    seconds = time.perf_counter() - t0
    chosen = [h.weight_decay for h in heads]
    accuracy = [float(np.mean(h.test_proba.argmax(1) == labels[h.test_rows])) for h in heads]
    return seconds, chosen, float(np.mean(accuracy))


def read_store(results: str, store: str):
    """(experiment, features, class labels, number of classes, each run's split) of one stored
    `dataset/backbone/representation` of a default run's results folder."""
    config = default_config()
    config["results_dir"] = config["cache_dir"] = results
    exp = resolve(config)
    dataset, backbone, representation = store.split("/")
    spec = exp.feature_spec(dataset, backbone, representation)
    features = feature_store.read(exp.feature_store(dataset, backbone, representation), spec)
    labels, n_classes, classes, fixed, given, _ = training.read_labels(
        exp.data_store(dataset), exp.data_spec(dataset)
    )
    runs = list(range(exp.runs))
    split_of = splits.run_splits(classes, exp.split, runs, dataset, fixed, given=given)
    return exp, features, labels, n_classes, split_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(REPO / "results"), help="a default run's")
    parser.add_argument("--store", default="shapes/effnet/edges", help="dataset/backbone/rep")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    torch.set_num_threads(1)
    exp, features, labels, n_classes, split_of = read_store(args.results, args.store)
    runs = list(split_of)
    probe = stacking.ProbeConfig.from_spec(exp.probe_spec("linear"))
    decays = list(probe.decays)
    print(
        f"{args.store}, class, {len(runs)} runs, {len(decays)} weight decays, one thread; "
        f"seconds, chosen decays (per run), mean test accuracy"
    )
    print(
        f"{'layer':10s}{'dim':>6s}  {'ours':>26s}  {'scikit-learn cold':>26s}"
        f"  {'scikit-learn path':>26s}"
    )
    totals = np.zeros(3)
    with threadpool_limits(1):
        for layer, x in features.items():
            row = [
                ours({layer: x}, labels, split_of, probe, n_classes),
                scikit_learn(x, labels, split_of, decays, n_classes, warm=False),
                scikit_learn(x, labels, split_of, decays, n_classes, warm=True),
            ]
            totals += [r[0] for r in row]
            cells = [f"{s:6.2f}s {','.join(f'{d:g}' for d in c):>12s} {a:.3f}" for s, c, a in row]
            print(f"{layer:10s}{x.shape[1]:6d}  " + "  ".join(f"{c:>26s}" for c in cells))
        whole = ours(features, labels, split_of, probe, n_classes)[0]
    print(f"{'sum':16s}  {totals[0]:6.2f}s{'':20s}{totals[1]:6.2f}s{'':20s}{totals[2]:6.2f}s")
    print(
        f"the store as its train job fits it (every layer together): {whole:.2f} s; "
        f"scikit-learn cold / ours {totals[1] / whole:.1f}x, path / ours {totals[2] / whole:.1f}x"
    )


if __name__ == "__main__":
    main()
