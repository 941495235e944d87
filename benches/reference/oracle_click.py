#!/usr/bin/env python3
"""The click AUC a correctly specified model reaches on a synthetic ingest: the ceiling that
finite training data leaves below the Bayes-optimal AUC (benches/README.md, "Synthetic data
against the Bayes-optimal AUC").

Usage: python3 oracle_click.py INGEST_DIR pairs|lowrank [RANK]

The synthetic click logit is a user x item affinity plus position, device and hour effects
(crates/mtrec-synth). Both models are fitted on the train split, chosen on the valid split and
scored on the test split:
- `pairs`: logistic regression on one-hot (user, item) pair, position, device and hour: a free
  logit per pair, for small worlds where every pair is seen often (needs scikit-learn);
- `lowrank`: logit = <U_user, V_item> + biases + position + device + hour with RANK (default 8,
  the generator's latent dimension) factors, L2 on the factors (1e-5 or 1e-4), Adam (lr 0.01),
  batch 4096, up to 30 epochs with patience 2, for large worlds where most pairs are unseen
  (numpy only: the gradients are written out).
Prints the best test AUC and the Bayes-optimal AUC (the true p_click). Needs pyarrow and numpy.
"""
import glob
import sys

import numpy as np
import pyarrow.ipc as ipc
from sklearn.metrics import roc_auc_score

COLUMNS = ["user_id", "item_id", "position", "device", "hour", "label.click", "extra.p_click"]


def load(ingest, split):
    """A split's columns, its shards concatenated."""
    parts = [ipc.open_file(f).read_all() for f in sorted(glob.glob(f"{ingest}/{split}/part-*.arrow"))]
    return {k: np.concatenate([t.column(k).to_numpy() for t in parts]) for k in COLUMNS}


def pairs(train, valid, test):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    def x(d):
        pair = d["user_id"].astype(np.int64) * 1_000_000 + d["item_id"].astype(np.int64)
        return np.stack([pair, d["position"], d["device"], d["hour"]], 1)

    enc = OneHotEncoder(handle_unknown="ignore").fit(x(train))
    best = None
    for c in [0.3, 1.0, 3.0]:
        m = LogisticRegression(C=c, max_iter=2000).fit(enc.transform(x(train)), train["label.click"])
        score = lambda d: m.predict_proba(enc.transform(x(d)))[:, 1]
        v = roc_auc_score(valid["label.click"], score(valid))
        if best is None or v > best[0]:
            best = (v, roc_auc_score(test["label.click"], score(test)), f"C={c}")
    return best


def lowrank(train, valid, test, rank):
    rng = np.random.default_rng(1)
    keys = COLUMNS[:5]
    sizes = {k: int(max(d[k].max() for d in (train, valid, test))) + 1 for k in keys}
    y = train["label.click"].astype(np.float64)
    best = None
    for l2 in [1e-5, 1e-4]:
        lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
        params = {"u": 0.05 * rng.standard_normal((sizes["user_id"], rank)),
                  "v": 0.05 * rng.standard_normal((sizes["item_id"], rank))}
        params.update({f"b.{k}": np.zeros(n) for k, n in sizes.items()})
        moments = {k: (np.zeros_like(p), np.zeros_like(p)) for k, p in params.items()}

        def logit(d, idx=slice(None)):
            ui, ii = d["user_id"][idx], d["item_id"][idx]
            z = (params["u"][ui] * params["v"][ii]).sum(1)
            return z + sum(params[f"b.{k}"][d[k][idx]] for k in keys)

        stale, step = 0, 0
        for epoch in range(30):
            order = rng.permutation(len(y))
            for start in range(0, len(y), 4096):
                idx = order[start:start + 4096]
                n = len(idx)
                ui, ii = train["user_id"][idx], train["item_id"][idx]
                u, v = params["u"][ui], params["v"][ii]
                g = (1.0 / (1.0 + np.exp(-logit(train, idx))) - y[idx]) / n
                grads = {k: np.zeros_like(p) for k, p in params.items()}
                # Mean log loss plus l2 * mean squared norm of the batch's factors.
                np.add.at(grads["u"], ui, g[:, None] * v + 2 * l2 * u / n)
                np.add.at(grads["v"], ii, g[:, None] * u + 2 * l2 * v / n)
                for k in keys:
                    np.add.at(grads[f"b.{k}"], train[k][idx], g)
                step += 1
                for k, p in params.items():
                    m, s2 = moments[k]
                    m *= b1
                    m += (1 - b1) * grads[k]
                    s2 *= b2
                    s2 += (1 - b2) * grads[k] ** 2
                    p -= lr * (m / (1 - b1 ** step)) / (np.sqrt(s2 / (1 - b2 ** step)) + eps)
            vauc = roc_auc_score(valid["label.click"], logit(valid))
            tauc = roc_auc_score(test["label.click"], logit(test))
            if best is None or vauc > best[0]:
                best, stale = (vauc, tauc, f"l2={l2} lr={lr} epoch={epoch + 1}"), 0
            else:
                stale += 1
                if stale >= 2:
                    break
    return best


def main():
    ingest, mode = sys.argv[1], sys.argv[2]
    train, valid, test = (load(ingest, s) for s in ("train", "valid", "test"))
    if mode == "pairs":
        _, auc, chosen = pairs(train, valid, test)
    else:
        _, auc, chosen = lowrank(train, valid, test, int(sys.argv[3]) if len(sys.argv) > 3 else 8)
    bayes = roc_auc_score(test["label.click"], test["extra.p_click"])
    print(f"{mode} ({chosen}): test click AUC {auc:.4f}, Bayes-optimal {bayes:.4f}, gap {bayes - auc:.4f}")


if __name__ == "__main__":
    main()
