"""onnxruntime reference for mtrec's serving benchmarks (benches/serve.sh, serve_synthetic.sh).

Builds an mtrec MMoE in PyTorch from a bundle's `weights.safetensors` (tensor names:
crates/mtrec-model/src/io.rs), exports it to ONNX, checks that onnxruntime's outputs equal
`mtrec predict`'s on the test split, then times onnxruntime on the same batches as the load
generator (benches/src/bin/serve_load/): with `--endpoint score`, batch k holds `items` rows,
each the user and context of encoded row k*items with the item of row k*items + j (a Census
row has no item, so its rows are equal); with `--endpoint batch`, rows k*items.. as they are.
Every row is computed in full, as a typical ONNX deployment scores flattened rows.

The ONNX graph takes encoded inputs (int64 ids, float32 numerics) and returns every task's
output: it does the embedding lookups and the dense network, not the JSON parsing and feature
encoding that `mtrec serve` does per request.

Three structures, all exactly mtrec's function:
- `fused` (default; Census): all embedding tables in one (one Gather), the experts' first layers
  as one product (as mtrec has them), the experts' deeper layers as one batched product;
- `census_torch`: census_torch.py's MMoE class as it is (one module per expert), weights loaded;
- `general`: mtrec_torch.py's MMoE of any bundle without cross networks, attention or product
  tasks (user, item and context features, lists, the dot-product interactions, every scope).

Prints one JSON line per measurement (like serve_load). Optional: needs torch, numpy, pyarrow,
onnx and onnxruntime (pip install onnxruntime onnx); no test uses it.
"""
import argparse
import json
import os
import sys
import tempfile
import threading
import time
import warnings

import glob

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from census_torch import MMoE  # noqa: E402
from mtrec_torch import MtrecMMoE, read_safetensors  # noqa: E402
from mtrec_torch import layout as general_layout  # noqa: E402


def layout(pipeline):
    """mtrec's input row (crates/mtrec-model/src/layout.rs): user, item, context features; within
    a side, embeddings in pipeline order, then numeric values. Returns (categorical features with
    their tables, numeric features) in that order, and the sides present."""
    cats, nums = [], []
    for side in ("user", "item", "context"):
        for f in pipeline["features"]:
            t = f["transform"]
            if f["side"] != side:
                continue
            if t["type"] == "numeric":
                continue
            if t["type"] == "multi_categorical":
                raise SystemExit(f"feature {f['name']}: multi-categorical features are not supported here")
            ids = t.get("ids", {})
            table = ids["vocabulary"] if ids.get("kind") == "vocabulary" else f["name"]
            cats.append((f["name"], table))
        nums += [f["name"] for f in pipeline["features"] if f["side"] == side and f["transform"]["type"] == "numeric"]
    sides = {f["side"] for f in pipeline["features"] if f["transform"]["type"] != "numeric"}
    if "user" in sides and "item" in sides:
        raise SystemExit("user-item dot interactions are not supported here (Census has user features only)")
    return cats, nums


class ServeMMoE(nn.Module):
    """mtrec's MMoE forward (crates/mtrec-model/src/arch.rs), with every task's probability."""

    def __init__(self, w, tables, experts, towers, tasks):
        super().__init__()
        embs = [w[f"embedding.{t}"] for t in tables]
        dims = {e.shape[1] for e in embs}
        assert len(dims) == 1, "one embedding dimension for every feature"
        self.dim = dims.pop()
        self.table = nn.Parameter(torch.cat(embs), requires_grad=False)
        self.register_buffer("offsets", torch.tensor(np.cumsum([0] + [e.shape[0] for e in embs[:-1]]), dtype=torch.int64))
        self.experts = experts
        p = "pair.shared"
        self.w1, self.b1 = w[f"{p}.experts.0.weight"], w[f"{p}.experts.0.bias"]
        self.deeper = []
        layer = 0
        while f"{p}.expert0.{layer}.weight" in w:
            ws = torch.stack([w[f"{p}.expert{e}.{layer}.weight"] for e in range(experts)])  # E x in x out
            bs = torch.stack([w[f"{p}.expert{e}.{layer}.bias"] for e in range(experts)]).unsqueeze(1)  # E x 1 x out
            self.deeper.append((ws, bs))
            layer += 1
        self.gates = [(w[f"{p}.gate{t}.weight"], w[f"{p}.gate{t}.bias"]) for t in range(len(tasks))]
        self.towers = [[(w[f"tower.{name}.{i}.weight"], w[f"tower.{name}.{i}.bias"]) for i in range(len(towers))] for name in tasks]
        self.heads = [(w[f"head.{name}.weight"], w[f"head.{name}.bias"]) for name in tasks]

    def forward(self, ids, numeric):
        b = ids.shape[0]
        x = torch.cat([self.table[ids + self.offsets].reshape(b, -1), numeric], dim=1)
        h = torch.relu(x @ self.w1 + self.b1)  # B x E*w1
        h = h.reshape(b, self.experts, -1).transpose(0, 1)  # E x B x w1
        for ws, bs in self.deeper:
            h = torch.relu(torch.bmm(h, ws) + bs)
        h = h.transpose(0, 1)  # B x E x w
        outs = []
        for (gw, gb), tower, (hw, hb) in zip(self.gates, self.towers, self.heads):
            g = torch.softmax(x @ gw + gb, dim=1).unsqueeze(2)
            z = (h * g).sum(dim=1)
            for tw, tb in tower:
                z = torch.relu(z @ tw + tb)
            outs.append(torch.sigmoid(z @ hw + hb))
        return torch.cat(outs, dim=1)


class CensusTorch(nn.Module):
    """census_torch.py's MMoE with the bundle's weights, and sigmoid outputs."""

    def __init__(self, w, tables, n_numeric, experts, expert_layers, towers, tasks):
        super().__init__()
        embs = [w[f"embedding.{t}"] for t in tables]
        self.m = MMoE([e.shape[0] for e in embs], embs[0].shape[1], n_numeric, experts, expert_layers, towers, len(tasks))
        p = "pair.shared"
        w1 = w[f"{p}.experts.0.weight"]
        width = expert_layers[0]
        with torch.no_grad():
            for e, emb in zip(self.m.embeddings, embs):
                e.weight.copy_(emb)
            for e, expert in enumerate(self.m.experts):
                linears = [m for m in expert if isinstance(m, nn.Linear)]
                linears[0].weight.copy_(w1[:, e * width : (e + 1) * width].T)
                linears[0].bias.copy_(w[f"{p}.experts.0.bias"][e * width : (e + 1) * width])
                for i, lin in enumerate(linears[1:]):
                    lin.weight.copy_(w[f"{p}.expert{e}.{i}.weight"].T)
                    lin.bias.copy_(w[f"{p}.expert{e}.{i}.bias"])
            for t, (gate, tower, name) in enumerate(zip(self.m.gates, self.m.towers, tasks)):
                gate.weight.copy_(w[f"{p}.gate{t}.weight"].T)
                gate.bias.copy_(w[f"{p}.gate{t}.bias"])
                linears = [m for m in tower.modules() if isinstance(m, nn.Linear)]
                for i, lin in enumerate(linears[:-1]):
                    lin.weight.copy_(w[f"tower.{name}.{i}.weight"].T)
                    lin.bias.copy_(w[f"tower.{name}.{i}.bias"])
                linears[-1].weight.copy_(w[f"head.{name}.weight"].T)
                linears[-1].bias.copy_(w[f"head.{name}.bias"])

    def forward(self, ids, numeric):
        return torch.sigmoid(torch.stack(self.m(ids, numeric), dim=1))


def read_split(data, split):
    """An encoded split: `<split>.arrow`, or the parts of `<split>/`."""
    path = f"{data}/{split}.arrow"
    if os.path.exists(path):
        return ipc.open_file(path).read_all()
    parts = sorted(glob.glob(f"{data}/{split}/*.arrow"))
    return pa.concat_tables([ipc.open_file(p).read_all() for p in parts])


def inputs_of(t, slots):
    """The model's inputs for the rows of table `t`: name -> array, and per input, a flag per
    column: whether it is an item-side feature's."""
    ids = [s for s in slots if s["kind"] == "ids"]
    lists = [s for s in slots if s["kind"] == "list"]
    values = [s for s in slots if s["kind"] == "value"]
    n = t.num_rows
    out = {"ids": np.stack([t.column(s["name"]).to_numpy().astype(np.int64) for s in ids], axis=1) if ids else np.zeros((n, 0), np.int64),
           "values": np.stack([t.column(s["name"]).to_numpy().astype(np.float32) for s in values], axis=1) if values else np.zeros((n, 0), np.float32)}
    if lists:
        cols = [t.column(s["name"]).combine_chunks() for s in lists]
        lengths = np.stack([np.diff(c.offsets.to_numpy()) for c in cols], axis=1).astype(np.int64)
        width = max(1, int(lengths.max()))
        padded = np.zeros((n, len(lists), width), np.int64)
        for j, c in enumerate(cols):
            offsets, flat = c.offsets.to_numpy(), c.values.to_numpy()
            row = np.repeat(np.arange(n), lengths[:, j])
            position = np.arange(offsets[-1] - offsets[0]) - np.repeat(offsets[:-1] - offsets[0], lengths[:, j])
            padded[row, j, position] = flat[offsets[0] : offsets[-1]]
        out["lists"], out["lengths"] = padded, lengths
    side = lambda group: np.array([s["side"] == "item" for s in group], dtype=bool)
    item = {"ids": side(ids), "values": side(values), "lists": side(lists), "lengths": side(lists)}
    return out, item


def encoded_rows(data, slots):
    """Every encoded row of the three splits, indexed by source row (`id.row`)."""
    tables = [read_split(data, split) for split in ("train", "valid", "test")]
    t = pa.concat_tables(tables)
    source = t.column("id.row").to_numpy()
    order = np.empty(source.max() + 1, dtype=np.int64)
    order[source] = np.arange(len(source))
    inputs, item = inputs_of(t, slots)
    return {k: v[order] for k, v in inputs.items()}, item


def pad_lists(inputs, width):
    """`lists` padded (or cut) to `width` positions, so that batches share a shape."""
    if "lists" in inputs and inputs["lists"].shape[2] != width:
        lists = np.zeros(inputs["lists"].shape[:2] + (width,), np.int64)
        w = min(width, inputs["lists"].shape[2])
        lists[:, :, :w] = inputs["lists"][:, :, :w]
        inputs = {**inputs, "lists": lists}
    return inputs


def percentiles(lat_ms):
    s = sorted(lat_ms)
    pick = lambda p: s[max(0, min(len(s), int(np.ceil(p / 100 * len(s)))) - 1)] if s else float("nan")
    return {"mean_ms": float(np.mean(s)), "p50_ms": pick(50), "p90_ms": pick(90), "p99_ms": pick(99), "max_ms": pick(100)}


def report(mode, label, workers, items, lat_ms, seconds, extra=None):
    out = {"mode": mode, "label": label, "connections": workers, "items": items, "seconds": seconds,
           "requests": len(lat_ms), "errors": 0, "requests_per_s": len(lat_ms) / seconds,
           "pairs_per_s": len(lat_ms) * items / seconds, **percentiles(lat_ms), **(extra or {})}
    print(json.dumps(out), flush=True)
    print(f"{mode:<22} {workers:>3} conn: {out['pairs_per_s']:>10.0f} pairs/s  p50 {out['p50_ms']:>8.3f} ms  "
          f"p99 {out['p99_ms']:>8.3f} ms  ({len(lat_ms)} requests)", file=sys.stderr, flush=True)


def main():
    import onnxruntime as ort

    p = argparse.ArgumentParser()
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", required=True, help="the mtrec ingest directory the bundle was trained on")
    p.add_argument("--predictions", required=True, help="`mtrec predict --split test` output (Parquet), checked against")
    p.add_argument("--items", type=int, default=100)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--endpoint", choices=["score", "batch"], default="score")
    p.add_argument("--structure", choices=["fused", "census_torch", "general"], default="fused")
    p.add_argument("--workers", type=int, default=16, help="concurrent callers (threads) of one session")
    p.add_argument("--intra-threads", type=int, default=1, help="onnxruntime intra-op threads under --workers callers")
    p.add_argument("--single-threads", type=int, default=0, help="intra-op threads for the single-caller timing (0: cores)")
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--single", type=int, default=2000, help="timed single calls on one thread (0: skip)")
    p.add_argument("--check-rows", type=int, default=2000)
    p.add_argument("--tolerance", type=float, default=1e-5)
    p.add_argument("--label", default="")
    a = p.parse_args()
    warnings.filterwarnings("ignore")  # the TorchScript exporter's deprecation notice
    torch.set_num_threads(os.cpu_count() or 1)

    pipeline = json.load(open(f"{a.bundle}/features.json"))
    meta = json.load(open(f"{a.bundle}/model.json"))
    arch = meta["model"]["architecture"]
    w = read_safetensors(f"{a.bundle}/weights.safetensors")
    slots = general_layout(pipeline)
    if a.structure == "general":
        model = MtrecMMoE(pipeline, meta, w)
        columns = model.prediction_columns()
        names = ["ids", "values"] + (["lists", "lengths"] if any(s["kind"] == "list" for s in slots) else [])
        feed = lambda x: {k: x[k] for k in names}
    else:
        if arch["type"] != "mmoe" or any(t["kind"] != "binary" or t["scope"] != "pair" for t in meta["tasks"]):
            raise SystemExit("only MMoE bundles with binary pair tasks are supported by this structure (try --structure general)")
        tasks = [t["name"] for t in meta["tasks"]]
        towers = meta["model"]["tower_layers"]
        cats, nums = layout(pipeline)
        tables = [t for _, t in cats]
        if a.structure == "fused":
            model = ServeMMoE(w, tables, arch["experts"], towers, tasks)
        else:
            model = CensusTorch(w, tables, len(nums), arch["experts"], arch["expert_layers"], towers, tasks)
        columns = [f"pred.{t}" for t in tasks]
        names = ["ids", "numeric"]
        feed = lambda x: {"ids": x["ids"], "numeric": x["values"]}
    model.eval()

    all_rows, item_columns = encoded_rows(a.data, slots)
    positions = all_rows["lists"].shape[2] if "lists" in all_rows else 0
    path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    example = tuple(torch.from_numpy(v[: a.items]) for v in feed(all_rows).values())
    with torch.no_grad():
        torch.onnx.export(model, example, path, input_names=names, output_names=["outputs"],
                          dynamic_axes={**{k: {0: "batch"} for k in names}, "outputs": {0: "batch"}},
                          opset_version=17, dynamo=False)

    def session(threads):
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])

    # The same model: onnxruntime against `mtrec predict` on the first rows of the test split.
    test, _ = inputs_of(read_split(a.data, "test"), slots)
    test = pad_lists(test, positions)
    n = min(a.check_rows, len(test["ids"]))
    got = session(1).run(None, feed({k: v[:n] for k, v in test.items()}))[0]
    pred = pq.read_table(a.predictions)
    want = np.stack([pred.column(c).to_numpy()[:n] for c in columns], axis=1)
    diff = float(np.abs(got - want).max())
    print(json.dumps({"mode": "onnx_check", "label": a.label, "rows": n, "max_abs_diff": diff, "tolerance": a.tolerance,
                      "structure": a.structure, "onnxruntime": ort.__version__}), flush=True)
    print(f"onnx check: {n} test rows, max |onnxruntime - mtrec predict| = {diff:.2e}", file=sys.stderr, flush=True)
    if not diff <= a.tolerance:
        raise SystemExit(f"onnxruntime's outputs differ from mtrec's by {diff:.2e} (> {a.tolerance}): not the same model")

    # The load generator's batches: the user and context of row k*items, the items of the rows
    # after it (score), or the rows as they are (batch).
    batches = []
    for k in range(a.requests):
        rows = np.arange(k * a.items, (k + 1) * a.items)
        batch = {}
        for name, values in all_rows.items():
            b = values[rows].copy()
            if a.endpoint == "score":
                keep = ~item_columns[name]
                b[:, keep] = values[np.full(a.items, k * a.items)][:, keep]
            batch[name] = np.ascontiguousarray(b)
        batches.append(feed(batch))

    sess = session(a.intra_threads)
    start = time.perf_counter()
    measure_from = start + a.warmup
    stop = measure_from + a.duration
    results = [None] * a.workers

    def worker(c):
        lat = []
        k = c * len(batches) // a.workers
        while True:
            t = time.perf_counter()
            if t >= stop:
                break
            sess.run(None, batches[k % len(batches)])
            k += 1
            if t >= measure_from:
                lat.append((time.perf_counter() - t) * 1000)
        results[c] = lat

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(a.workers)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, measure_from - time.perf_counter()))
    cpu = time.process_time()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu
    seconds = max(time.perf_counter() - measure_from, a.duration)
    report("onnx", a.label, a.workers, a.items, [x for r in results for x in r], seconds,
           {"intra_threads": a.intra_threads, "structure": a.structure, "cpu_s": cpu})

    if a.single > 0:
        single_threads = a.single_threads or os.cpu_count() or 1
        sess = session(single_threads)
        for k in range(min(a.single, 50)):
            sess.run(None, batches[k % len(batches)])
        lat = []
        start = time.perf_counter()
        for k in range(a.single):
            t = time.perf_counter()
            sess.run(None, batches[k % len(batches)])
            lat.append((time.perf_counter() - t) * 1000)
        report("onnx_single", a.label, 1, a.items, lat, time.perf_counter() - start,
               {"intra_threads": single_threads, "structure": a.structure})


if __name__ == "__main__":
    main()
