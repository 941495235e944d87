"""PyTorch CPU reference for mtrec's training-speed benchmark (benches/train_speed.sh).

The same model as mtrec's Census MMoE on the same encoded data (an mtrec ingest directory):
one embedding table per categorical feature, the numeric features as they are, MMoE experts
and gates over their concatenation, one tower and sigmoid head per binary task, masked BCE,
Adam. Prints training samples/s (forward, backward and optimizer step; data already in
memory, batches sliced from shuffled tensors).

Optional: needs `torch`, `pyarrow` and `numpy` (pip install torch pyarrow numpy); no test uses it.
"""
import argparse
import json
import time

import pyarrow.ipc as ipc
import torch
from torch import nn


class MMoE(nn.Module):
    def __init__(self, cards, dim, n_numeric, experts, expert_layers, towers, tasks):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c, dim) for c in cards)
        width = len(cards) * dim + n_numeric

        def mlp(inp, layers):
            mods = []
            for w in layers:
                mods += [nn.Linear(inp, w), nn.ReLU()]
                inp = w
            return nn.Sequential(*mods), inp

        self.experts = nn.ModuleList(mlp(width, expert_layers)[0] for _ in range(experts))
        out = expert_layers[-1]
        self.gates = nn.ModuleList(nn.Linear(width, experts) for _ in range(tasks))
        self.towers = nn.ModuleList(nn.Sequential(mlp(out, towers)[0], nn.Linear(towers[-1], 1)) for _ in range(tasks))

    def forward(self, ids, numeric):
        x = torch.cat([e(ids[:, i]) for i, e in enumerate(self.embeddings)] + [numeric], dim=1)
        h = torch.stack([e(x) for e in self.experts], dim=1)  # B x E x w
        outs = []
        for gate, tower in zip(self.gates, self.towers):
            g = torch.softmax(gate(x), dim=1).unsqueeze(2)
            outs.append(tower((h * g).sum(dim=1)).squeeze(1))
        return outs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="mtrec ingest directory")
    p.add_argument("--dim", type=int, default=4)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--expert-layers", type=int, nargs="+", default=[16])
    p.add_argument("--towers", type=int, nargs="+", default=[8])
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    pipeline = json.load(open(f"{a.data}/features.json"))
    table = ipc.open_file(f"{a.data}/train.arrow").read_all()
    cats, nums, cards = [], [], []
    for f in pipeline["features"]:
        t = f["transform"]
        if t["type"] == "numeric":
            nums.append(f["name"])
        else:
            cats.append(f["name"])
            voc = t["ids"].get("vocabulary")
            n = len(pipeline["vocabularies"][voc]) if voc else t["ids"]["buckets"]
            cards.append(n + 2)
    ids = torch.stack([torch.tensor(table.column(c).to_numpy().astype("int64")) for c in cats], dim=1)
    numeric = torch.stack([torch.tensor(table.column(c).to_numpy()) for c in nums], dim=1).float()
    tasks = [t["name"] for t in pipeline["tasks"]]
    labels = [torch.tensor(table.column(f"label.{t}").to_numpy()) for t in tasks]
    masks = [torch.tensor(table.column(f"mask.{t}").to_numpy()).float() for t in tasks]
    model = MMoE(cards, a.dim, len(nums), a.experts, a.expert_layers, a.towers, len(tasks))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bce = nn.BCEWithLogitsLoss(reduction="none")
    n = ids.shape[0]
    rates = []
    for _ in range(a.epochs):
        order = torch.randperm(n)
        start = time.perf_counter()
        for s in range(0, n, a.batch_size):
            b = order[s : s + a.batch_size]
            outs = model(ids[b], numeric[b])
            loss = sum((bce(o, y[b]) * m[b]).sum() / m[b].sum().clamp(min=1) for o, y, m in zip(outs, labels, masks))
            opt.zero_grad()
            loss.backward()
            opt.step()
        rates.append(n / (time.perf_counter() - start))
    rates.sort()
    print(json.dumps({"samples_per_second": rates[len(rates) // 2], "epochs": rates}))


if __name__ == "__main__":
    main()
