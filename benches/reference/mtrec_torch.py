"""mtrec MMoE bundles as PyTorch modules, for the onnxruntime reference (serve_onnx.py).

`MtrecMMoE` builds any MMoE bundle without cross networks, attention or product tasks from its
features.json, model.json and weights.safetensors, following crates/mtrec-model:
- the input row (layout.rs): user, item, then context features; within a side, the embedded
  features in pipeline order (multi-categorical ones mean- or sum-pooled), then numeric values;
- the scope groups (model.rs): pair tasks see the whole row plus the dot product of every
  user-side embedding with every item-side embedding of the same dimension; user tasks the
  user block; item tasks the item block;
- per group an MMoE (arch.rs: the experts' first layers as one product, per-task softmax
  gates), then each task's tower and head: a probability for binary tasks, the output itself
  for regression, class probabilities for multiclass.

Inputs of `forward`: `ids` (int64, one column per single-id feature in layout order), `values`
(float32, one column per numeric feature in layout order) and, where the model has list
features, `lists` (int64, rows x list features x positions, padded with 0) and `lengths`
(int64, rows x list features).
"""
import json
import struct

import numpy as np
import torch
from torch import nn


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", (name, t["dtype"])
        a, b = t["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[8 + n + a : 8 + n + b], dtype="<f4").reshape(t["shape"]).copy())
    return out


def table_of(feature):
    t = feature["transform"]
    ids = t.get("ids", {})
    if t["type"] in ("categorical", "multi_categorical") and ids.get("kind") == "vocabulary":
        return ids["vocabulary"]
    return feature["name"]


def layout(pipeline):
    """The input row's slots in order: dicts with name, side, kind (ids, list or value), table,
    pooling, and their column range."""
    slots, at = [], 0
    for side in ("user", "item", "context"):
        for embedded in (True, False):
            for f in pipeline["features"]:
                t = f["transform"]
                if f["side"] != side or (t["type"] != "numeric") != embedded:
                    continue
                if t["type"] == "multi_categorical" and t.get("attention"):
                    raise SystemExit(f"feature {f['name']}: attention pooling is not supported here")
                kind = {"numeric": "value", "multi_categorical": "list"}.get(t["type"], "ids")
                width = 1 if kind == "value" else t["embedding_dim"]
                slots.append({"name": f["name"], "side": side, "kind": kind, "table": None if kind == "value" else table_of(f),
                              "pooling": t.get("pooling"), "cols": (at, at + width)})
                at += width
    return slots


class MtrecMMoE(nn.Module):
    def __init__(self, pipeline, meta, w):
        super().__init__()
        arch = meta["model"]["architecture"]
        if arch["type"] != "mmoe" or meta["model"].get("cross"):
            raise SystemExit("only MMoE bundles without cross networks are supported here")
        if any(t.get("product_of") for t in meta["tasks"]):
            raise SystemExit("product tasks are not supported here")
        self.slots = layout(pipeline)
        tables = list(dict.fromkeys(s["table"] for s in self.slots if s["table"]))
        embs = [w[f"embedding.{t}"] for t in tables]
        offsets = dict(zip(tables, np.cumsum([0] + [e.shape[0] for e in embs[:-1]]).tolist()))
        self.tables = nn.ParameterList([nn.Parameter(e, requires_grad=False) for e in embs])
        self.table_index = {t: i for i, t in enumerate(tables)}
        self.offsets = offsets
        width = self.slots[-1]["cols"][1]
        sides = {side: [s for s in self.slots if s["side"] == side] for side in ("user", "item", "context")}
        span = lambda ss: (ss[0]["cols"][0], ss[-1]["cols"][1]) if ss else (0, 0)
        ranges = {"pair": (0, width), "user": span(sides["user"]), "item": span(sides["item"])}
        emb = lambda side: [s["cols"] for s in sides[side] if s["kind"] != "value"]
        pair_dots = [(u, i) for u in emb("user") for i in emb("item") if u[1] - u[0] == i[1] - i[0]]
        if meta["model"].get("interactions", "user_item_dot") != "user_item_dot":
            pair_dots = []
        self.tasks = meta["tasks"]
        self.groups = []
        for scope in ("pair", "user", "item"):
            tasks = [t for t in self.tasks if t["scope"] == scope]
            if not tasks:
                continue
            p = f"{scope}.shared"
            deeper, layer = [], 0
            while f"{p}.expert0.{layer}.weight" in w:
                ws = torch.stack([w[f"{p}.expert{e}.{layer}.weight"] for e in range(arch["experts"])])
                bs = torch.stack([w[f"{p}.expert{e}.{layer}.bias"] for e in range(arch["experts"])]).unsqueeze(1)
                deeper.append((ws, bs))
                layer += 1
            heads = []
            for k, t in enumerate(tasks):
                tower, i = [], 0
                while f"tower.{t['name']}.{i}.weight" in w:
                    tower.append((w[f"tower.{t['name']}.{i}.weight"], w[f"tower.{t['name']}.{i}.bias"]))
                    i += 1
                heads.append((t, (w[f"{p}.gate{k}.weight"], w[f"{p}.gate{k}.bias"]), tower,
                              (w[f"head.{t['name']}.weight"], w[f"head.{t['name']}.bias"])))
            self.groups.append({"range": ranges[scope], "dots": pair_dots if scope == "pair" else [],
                                "first": (w[f"{p}.experts.0.weight"], w[f"{p}.experts.0.bias"]),
                                "deeper": deeper, "experts": arch["experts"], "heads": heads})
        self.order = {t["name"]: i for i, t in enumerate(self.tasks)}
        self.log1p = {t["name"] for t in pipeline["tasks"] if (t.get("label") or {}).get("log1p")}

    def forward(self, ids, values, lists=None, lengths=None):
        cols, i_ids, i_lists, i_values = [], 0, 0, 0
        for s in self.slots:
            if s["kind"] == "value":
                cols.append(values[:, i_values : i_values + 1])
                i_values += 1
                continue
            table = self.tables[self.table_index[s["table"]]]
            if s["kind"] == "ids":
                cols.append(table[ids[:, i_ids]])
                i_ids += 1
            else:
                n = lengths[:, i_lists : i_lists + 1]
                rows = table[lists[:, i_lists, :]]  # B x L x d
                mask = (torch.arange(lists.shape[2]).unsqueeze(0) < n).unsqueeze(2).to(rows.dtype)
                pooled = (rows * mask).sum(dim=1)
                if s["pooling"] == "mean":
                    pooled = pooled / n.clamp(min=1).to(pooled.dtype)
                cols.append(pooled)
                i_lists += 1
        x = torch.cat(cols, dim=1)
        b = x.shape[0]
        outputs = [None] * len(self.tasks)
        for g in self.groups:
            gx = x[:, g["range"][0] : g["range"][1]]
            if g["dots"]:
                dots = [(x[:, u0:u1] * x[:, i0:i1]).sum(dim=1, keepdim=True) for (u0, u1), (i0, i1) in g["dots"]]
                gx = torch.cat([gx] + dots, dim=1)
            w1, b1 = g["first"]
            h = torch.relu(gx @ w1 + b1).reshape(b, g["experts"], -1).transpose(0, 1)
            for ws, bs in g["deeper"]:
                h = torch.relu(torch.bmm(h, ws) + bs)
            h = h.transpose(0, 1)  # B x E x width
            for task, (gw, gb), tower, (hw, hb) in g["heads"]:
                z = (h * torch.softmax(gx @ gw + gb, dim=1).unsqueeze(2)).sum(dim=1)
                for tw, tb in tower:
                    z = torch.relu(z @ tw + tb)
                z = z @ hw + hb
                kind = task["kind"]
                outputs[self.order[task["name"]]] = (
                    torch.sigmoid(z) if kind == "binary" else torch.softmax(z, dim=1) if kind == "multiclass" else z
                )
        return torch.cat(outputs, dim=1)

    def prediction_columns(self):
        """The `mtrec predict` columns of the outputs, in order."""
        out = []
        for t in self.tasks:
            if t["kind"] == "multiclass":
                out += [f"prob.{t['name']}.{c}" for c in t["classes"]]
            elif t["kind"] == "regression" and t["name"] in self.log1p:
                out.append(f"pred.{t['name']}.log1p")
            else:
                out.append(f"pred.{t['name']}")
        return out
