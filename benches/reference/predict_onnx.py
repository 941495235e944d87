"""onnxruntime reference for `mtrec predict` (benches/predict.sh): the bundle's MMoE built in
PyTorch (mtrec_torch.py, any MMoE without cross networks, attention or product tasks), exported
to ONNX, checked against `mtrec predict`'s output on the first test rows, then run over every
row of an encoded split in batches, as an offline scoring job would.

Timed: reading the split's Arrow parts into the model's input arrays (`read_s`: ids, numerics,
lists padded to the longest in the split) and onnxruntime's runs over all of them (`run_s`);
rows/s of each and of both together. Nothing is written (`mtrec predict` also writes its
Parquet file, which its own time includes).

Prints one JSON line. Optional: needs torch, numpy, pyarrow, onnx and onnxruntime; no test uses it.
"""
import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import pyarrow.parquet as pq
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mtrec_torch import MtrecMMoE, layout, read_safetensors  # noqa: E402
from serve_onnx import inputs_of, read_split  # noqa: E402


def main():
    import onnxruntime as ort

    p = argparse.ArgumentParser()
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", required=True, help="the mtrec ingest directory")
    p.add_argument("--split", default="test")
    p.add_argument("--predictions", required=True, help="`mtrec predict` output of that split (Parquet), checked against")
    p.add_argument("--batch-rows", type=int, default=8192, help="rows per onnxruntime run")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: cores)")
    p.add_argument("--check-rows", type=int, default=2000)
    p.add_argument("--tolerance", type=float, default=1e-5)
    a = p.parse_args()
    warnings.filterwarnings("ignore")  # the TorchScript exporter's deprecation notice
    threads = a.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)

    pipeline = json.load(open(f"{a.bundle}/features.json"))
    meta = json.load(open(f"{a.bundle}/model.json"))
    model = MtrecMMoE(pipeline, meta, read_safetensors(f"{a.bundle}/weights.safetensors"))
    model.eval()
    slots = layout(pipeline)
    names = ["ids", "values"] + (["lists", "lengths"] if any(s["kind"] == "list" for s in slots) else [])

    start = time.perf_counter()
    inputs, _ = inputs_of(read_split(a.data, a.split), slots)
    feed = {k: np.ascontiguousarray(inputs[k]) for k in names}
    read_s = time.perf_counter() - start
    n = len(feed["ids"])

    path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    example = tuple(torch.from_numpy(v[:8]) for v in feed.values())
    with torch.no_grad():
        torch.onnx.export(model, example, path, input_names=names, output_names=["outputs"],
                          dynamic_axes={**{k: {0: "batch"} for k in names}, "outputs": {0: "batch"}},
                          opset_version=17, dynamo=False)
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])

    # The same model: onnxruntime against `mtrec predict` on the first rows.
    k = min(a.check_rows, n)
    got = sess.run(None, {name: v[:k] for name, v in feed.items()})[0]
    pred = pq.read_table(a.predictions)
    want = np.stack([pred.column(c).to_numpy()[:k] for c in model.prediction_columns()], axis=1)
    diff = float(np.abs(got - want).max())
    if not diff <= a.tolerance:
        raise SystemExit(f"onnxruntime's outputs differ from mtrec's by {diff:.2e} (> {a.tolerance}): not the same model")

    start = time.perf_counter()
    for lo in range(0, n, a.batch_rows):
        sess.run(None, {name: v[lo : lo + a.batch_rows] for name, v in feed.items()})
    run_s = time.perf_counter() - start
    out = {"mode": "onnx_predict", "rows": n, "batch_rows": a.batch_rows, "threads": threads, "read_s": read_s,
           "run_s": run_s, "rows_per_s": n / (read_s + run_s), "run_rows_per_s": n / run_s, "max_abs_diff": diff,
           "onnxruntime": ort.__version__}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
