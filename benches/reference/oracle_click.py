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
  the generator's latent dimension) factors, L2 on the factors (0 to 1e-3), Adam (lr 0.01 or
  0.003), batch 4096, up to 40 epochs with patience 3, for large worlds where most pairs are
  unseen (needs torch).
Prints the best test AUC and the Bayes-optimal AUC (the true p_click). Needs pyarrow and numpy.
"""
import sys

import numpy as np
import pyarrow.ipc as ipc
from sklearn.metrics import roc_auc_score

COLUMNS = ["user_id", "item_id", "position", "device", "hour", "label.click", "extra.p_click"]


def load(ingest, split):
    t = ipc.open_file(f"{ingest}/{split}.arrow").read_all()
    return {k: t.column(k).to_numpy() for k in COLUMNS}


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
    import torch

    torch.manual_seed(1)
    sizes = {k: int(max(d[k].max() for d in (train, valid, test))) + 1 for k in COLUMNS[:5]}
    emb = lambda n, dim: torch.nn.Parameter(0.05 * torch.randn(n, dim))
    tensors = lambda d: {k: torch.from_numpy(d[k].astype(np.int64)) for k in COLUMNS[:5]}
    tr, va, te = tensors(train), tensors(valid), tensors(test)
    y = torch.from_numpy(train["label.click"].astype(np.float32))
    best = None
    for l2, lr in [(l2, lr) for l2 in [0.0, 1e-6, 1e-5, 1e-4, 1e-3] for lr in [0.01, 0.003]]:
        u, v = emb(sizes["user_id"], rank), emb(sizes["item_id"], rank)
        bias = {k: emb(n, 1) for k, n in sizes.items()}
        params = [u, v, *bias.values()]
        opt = torch.optim.Adam(params, lr=lr)

        def logit(d, idx=slice(None)):
            ui, ii = d["user_id"][idx], d["item_id"][idx]
            z = (u[ui] * v[ii]).sum(1)
            return z + sum(bias[k][d[k][idx]].squeeze(1) for k in bias), ui, ii

        stale = 0
        for epoch in range(40):
            order = torch.randperm(len(y))
            for start in range(0, len(y), 4096):
                idx = order[start:start + 4096]
                z, ui, ii = logit(tr, idx)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y[idx])
                loss = loss + l2 * ((u[ui] ** 2).sum(1) + (v[ii] ** 2).sum(1)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                vauc = roc_auc_score(valid["label.click"], logit(va)[0].numpy())
                tauc = roc_auc_score(test["label.click"], logit(te)[0].numpy())
            if best is None or vauc > best[0]:
                best, stale = (vauc, tauc, f"l2={l2} lr={lr} epoch={epoch + 1}"), 0
            else:
                stale += 1
                if stale >= 3:
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
