#!/usr/bin/env python3
"""Where a synthetic model's click logit differs from the true one (benches/README.md,
"Synthetic data against the Bayes-optimal AUC").

Usage: python3 bayes_residual.py INGEST_DIR PREDICTIONS.parquet [SPLIT]
(`mtrec predict --bundle B --data INGEST_DIR --split SPLIT --out PREDICTIONS.parquet`; needs
pyarrow, numpy and scikit-learn.) Prints the model's and the Bayes-optimal AUC, the correlation
of the logits, and the share of the residual logit's variance explained by each feature's
groups and by user-item pairs.
"""
import sys

import numpy as np
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

ingest, predictions = sys.argv[1], sys.argv[2]
split = sys.argv[3] if len(sys.argv) > 3 else "test"
p = pq.read_table(predictions)
t = ipc.open_file(f"{ingest}/{split}.arrow").read_all()
y = p["label.click"].to_numpy()
pred = p["pred.click"].to_numpy().astype(np.float64)
true = t["extra.p_click"].to_numpy()
logit = lambda q: np.log(q / (1 - q))
print(f"{split}: model AUC {roc_auc_score(y, pred):.4f}, Bayes-optimal {roc_auc_score(y, true):.4f}, "
      f"logit correlation {np.corrcoef(logit(pred), logit(true))[0, 1]:.4f}")
r = logit(true) - logit(pred)


def explained(keys):
    groups = {}
    for k, v in zip(keys, r):
        groups.setdefault(k, []).append(v)
    means = {k: np.mean(v) for k, v in groups.items()}
    return np.var([means[k] for k in keys]), len(groups)


print(f"residual variance {r.var():.4f}")
for column in ["position", "device", "hour", "user_id", "item_id", "category", "age_bucket"]:
    v, n = explained(t[column].to_numpy())
    print(f"  explained by {column:<10} {v:.4f} ({n} groups)")
v, n = explained(list(zip(t["user_id"].to_numpy(), t["item_id"].to_numpy())))
print(f"  explained by user-item pairs {v:.4f} ({n} groups)")
