#!/usr/bin/env python3
"""Times scikit-learn's roc_auc_score on the arrays written by the auc_speed example.

Usage: python3 auc_reference.py [DATA_DIR]   (default /tmp/auc_speed)
"""
import sys, time
import numpy as np
from sklearn.metrics import roc_auc_score

d = sys.argv[1] if len(sys.argv) > 1 else "/tmp/auc_speed"
scores = np.fromfile(f"{d}/scores.f32", dtype="<f4")
labels = np.fromfile(f"{d}/labels.f32", dtype="<f4")
best, value = float("inf"), None
for _ in range(3):
    t = time.perf_counter()
    value = roc_auc_score(labels, scores)
    best = min(best, time.perf_counter() - t)
print(f"rows={len(scores)} sklearn roc_auc_score = {value:.10f}  best of 3: {best:.3f} s")
