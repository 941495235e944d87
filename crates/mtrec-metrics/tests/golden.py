#!/usr/bin/env python3
"""Golden values for tests/golden.rs, computed outside mtrec with scikit-learn, scipy and numpy.

Rerun from this directory:  python3 golden.py > golden/data.rs
Needs: pip install numpy scipy scikit-learn.

Inputs are small hand-sized arrays (with ties and weights) drawn once from a fixed seed and
rounded; every value is cast to float32 first, as the Rust side sees f32.
"""
import numpy as np
import scipy.stats
from sklearn.metrics import (roc_auc_score, roc_curve, log_loss, mean_squared_error,
                             mean_absolute_error, r2_score, accuracy_score, f1_score)

rng = np.random.RandomState(20240601)
f32 = lambda a: np.asarray(a, dtype=np.float32).astype(np.float64)

# ---- binary: 24 rows, scores on a 0.05 grid (many ties), 5 users ----
N = 24
users = rng.randint(0, 5, N).astype(np.uint64)
users[:5] = np.arange(5)  # every user present
labels = (rng.rand(N) < 0.45).astype(np.float64)
labels[:2] = [1, 0]
score_a = f32(np.clip(np.round((0.25 * labels + 0.6 * rng.rand(N)) * 20) / 20, 0.05, 0.95))
score_b = f32(np.clip(np.round((0.3 * labels + 0.7 * rng.rand(N)) * 20) / 20, 0.05, 0.95))
weights = f32(np.round(rng.uniform(0.5, 2.0, N) * 2) / 2)

auc_a = roc_auc_score(labels, score_a)
auc_a_weighted = roc_auc_score(labels, score_a, sample_weight=weights)
logloss_a = log_loss(labels, score_a)  # no clipping needed: scores lie in [0.05, 0.95]
logloss_a_weighted = log_loss(labels, score_a, sample_weight=weights)
fpr, tpr, thr = roc_curve(labels, score_a, drop_intermediate=False)

# GAUC: per-user AUC, weighted by the user's row count; single-class users skipped.
num = den = 0.0
skipped = 0
for u in np.unique(users):
    m = users == u
    if len(np.unique(labels[m])) < 2:
        skipped += 1
        continue
    num += m.sum() * roc_auc_score(labels[m], score_a[m])
    den += m.sum()
gauc_a = num / den

# Calibration with K = 5 equal-width bins: bin = floor(p * K), p = 1 in the last bin.
K = 5
bins = np.minimum(np.floor(score_a * K).astype(int), K - 1)
ece = 0.0
rel = []
for b in range(K):
    m = bins == b
    if m.sum() == 0:
        rel.append((0, None, None))
        continue
    mp, ob = score_a[m].mean(), labels[m].mean()
    ece += m.sum() / N * abs(mp - ob)
    rel.append((int(m.sum()), mp, ob))

# Ranking @ K=3: per user, stable sort by score descending (ties keep row order).
def ranking(scores, labels, users, k):
    nd, rc, rr = [], [], []
    for u in sorted(set(users.tolist()), key=lambda x: list(users).index(x)):
        idx = np.where(users == u)[0]
        y = labels[idx]
        if y.sum() == 0:
            continue
        order = idx[np.argsort(-scores[idx], kind="stable")]
        rel_ = (labels[order] != 0).astype(float)
        disc = 1.0 / np.log2(np.arange(2, len(order) + 2))
        dcg = (rel_[:k] * disc[:k]).sum()
        idcg = disc[:min(k, int(rel_.sum()))].sum()
        nd.append(dcg / idcg)
        rc.append(rel_[:k].sum() / rel_.sum())
        rr.append(1.0 / (np.argmax(rel_) + 1))
    return np.mean(nd), np.mean(rc), np.mean(rr), len(nd)

ndcg3, recall3, mrr, ranked_users = ranking(score_a, labels, users, 3)

# DeLong, fast version of Sun & Xu (2014), written from the paper with midranks.
def midrank(x):
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    t = np.zeros(len(x))
    i = 0
    while i < len(x):
        j = i
        while j < len(x) and xs[j] == xs[i]:
            j += 1
        t[i:j] = 0.5 * (i + j - 1) + 1  # average 1-based rank of the tie block
        i = j
    out = np.empty(len(x))
    out[order] = t
    return out

def delong(preds, y):
    pos, neg = preds[:, y == 1], preds[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    k = preds.shape[0]
    tx = np.array([midrank(pos[r]) for r in range(k)])
    ty = np.array([midrank(neg[r]) for r in range(k)])
    tz = np.array([midrank(np.concatenate([pos[r], neg[r]])) for r in range(k)])
    aucs = tz[:, :m].sum(axis=1) / m / n - (m + 1.0) / 2.0 / n
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    s = np.cov(v01) / m + np.cov(v10) / n
    return aucs, s

aucs, cov = delong(np.vstack([score_a, score_b]), labels)
delta = aucs[1] - aucs[0]
se = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
z = delta / se
p = 2 * scipy.stats.norm.sf(abs(z))
q = scipy.stats.norm.ppf(0.975)
assert abs(aucs[0] - auc_a) < 1e-12 and abs(aucs[1] - roc_auc_score(labels, score_b)) < 1e-12

# ---- regression: 15 rows with weights ----
R = 15
reg_target = f32(np.round(rng.normal(3, 2, R), 1))
reg_pred = f32(np.round(reg_target + rng.normal(0, 1, R), 1))
reg_w = f32(np.round(rng.uniform(0.5, 3, R), 1))

# ---- multiclass: 12 rows, 3 classes, no tied maxima ----
M, C = 12, 3
mc_labels = rng.randint(0, C, M).astype(np.float64)
logits = rng.normal(0, 1, (M, C)) + 1.5 * np.eye(C)[mc_labels.astype(int)] * (rng.rand(M, 1) < 0.6)
mc_probs = f32(np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 3))
mc_probs32 = mc_probs.copy()
mc_pred = mc_probs.argmax(1)
mc_ll = -np.mean(np.log(np.clip(mc_probs[np.arange(M), mc_labels.astype(int)], 1e-7, 1)))

def arr(name, a, ty="f32"):
    # f32 arrays print numpy's shortest float32 repr (exactly the f32 value Rust parses).
    lit = lambda v: ("f64::INFINITY" if v == np.inf else "f64::NAN" if np.isnan(v)
                     else str(np.float32(v)) if ty == "f32" else repr(float(v)))
    vals = ", ".join(lit(v) if ty.startswith("f") else str(int(v)) for v in np.ravel(a))
    print(f"pub const {name}: [{ty}; {np.size(a)}] = [{vals}];")

def num(name, v):
    print(f"pub const {name}: f64 = {float(v)!r};")

print("// @generated by tests/golden.py (scikit-learn / scipy / numpy); do not edit by hand.")
arr("USERS", users, "u64"); arr("LABELS", labels); arr("SCORE_A", score_a); arr("SCORE_B", score_b)
arr("WEIGHTS", weights)
num("AUC_A", auc_a); num("AUC_A_WEIGHTED", auc_a_weighted)
num("LOGLOSS_A", logloss_a); num("LOGLOSS_A_WEIGHTED", logloss_a_weighted)
arr("ROC_FPR", fpr, "f64"); arr("ROC_TPR", tpr, "f64"); arr("ROC_THRESHOLDS", thr, "f64")
num("GAUC_A", gauc_a); print(f"pub const GAUC_SKIPPED: usize = {skipped};")
num("MEAN_PRED_A", score_a.mean()); num("OBSERVED_RATE", labels.mean()); num("ECE5_A", ece)
arr("REL_COUNT", [r[0] for r in rel], "usize")
arr("REL_MEAN_PRED", [np.nan if r[1] is None else r[1] for r in rel], "f64")
arr("REL_OBSERVED", [np.nan if r[2] is None else r[2] for r in rel], "f64")
num("NDCG3_A", ndcg3); num("RECALL3_A", recall3); num("MRR_A", mrr)
print(f"pub const RANKED_USERS: usize = {ranked_users};")
num("DELONG_AUC_A", aucs[0]); num("DELONG_AUC_B", aucs[1]); num("DELONG_DELTA", delta)
num("DELONG_SE", se); num("DELONG_Z", z); num("DELONG_P", p)
num("DELONG_CI_LOW", delta - q * se); num("DELONG_CI_HIGH", delta + q * se)
arr("REG_TARGET", reg_target); arr("REG_PRED", reg_pred); arr("REG_WEIGHTS", reg_w)
num("RMSE", np.sqrt(mean_squared_error(reg_target, reg_pred)))
num("MAE", mean_absolute_error(reg_target, reg_pred)); num("R2", r2_score(reg_target, reg_pred))
num("RMSE_WEIGHTED", np.sqrt(mean_squared_error(reg_target, reg_pred, sample_weight=reg_w)))
num("MAE_WEIGHTED", mean_absolute_error(reg_target, reg_pred, sample_weight=reg_w))
num("R2_WEIGHTED", r2_score(reg_target, reg_pred, sample_weight=reg_w))
arr("MC_LABELS", mc_labels); arr("MC_PROBS", mc_probs32)
num("MC_ACCURACY", accuracy_score(mc_labels, mc_pred))
num("MC_MACRO_F1", f1_score(mc_labels, mc_pred, average="macro"))
num("MC_LOGLOSS", mc_ll)
