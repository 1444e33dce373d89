"""Graph convolution over a list of graphs of different sizes with sla.SparseTensorList.

Each graph's normalised adjacency ``D^-1/2 (A + I) D^-1/2`` is a SparseTensor
with its own size and pattern; a SparseTensorList multiplies all of them with
one block-diagonal product per layer.  The model (two GCN layers, mean pooling,
a linear read-out) learns to tell cycles from random trees.

Run: ``python examples/graph_conv.py``.
"""

from __future__ import annotations

import torch

import sla


def normalised_adjacency(edges: torch.Tensor, n: int) -> sla.SparseTensor:
    """``D^-1/2 (A + I) D^-1/2`` of an undirected graph given as ``[E, 2]`` edges."""
    loops = torch.arange(n)
    row = torch.cat([edges[:, 0], edges[:, 1], loops])
    col = torch.cat([edges[:, 1], edges[:, 0], loops])
    deg = torch.bincount(row, minlength=n).double()
    vals = deg[row].rsqrt() * deg[col].rsqrt()
    return sla.SparseTensor(vals, row, col, (n, n))


def random_graph(kind: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Edges of a cycle (kind 0) or a random tree (kind 1) on n nodes."""
    if kind == 0:
        a = torch.arange(n)
        return torch.stack([a, (a + 1) % n], 1)
    parent = torch.stack([torch.randint(0, i, (1,), generator=gen) for i in range(1, n)]).flatten()
    return torch.stack([torch.arange(1, n), parent], 1)


def make_dataset(num_graphs: int = 32, seed: int = 0) -> tuple[sla.SparseTensorList, torch.Tensor, torch.Tensor]:
    """``(adjacency list, node features [sum n_i, 3] (one-hot degree), graph labels [G])``."""
    gen = torch.Generator().manual_seed(seed)
    mats, feats, labels = [], [], []
    for g in range(num_graphs):
        kind = g % 2
        n = int(torch.randint(6, 20, (1,), generator=gen))
        edges = random_graph(kind, n, gen)
        A = normalised_adjacency(edges, n)
        deg = torch.bincount(edges.flatten(), minlength=n)
        mats.append(A)
        feats.append(torch.nn.functional.one_hot(deg.clamp(1, 3).long() - 1, 3).double())  # degree 1, 2, 3+
        labels.append(kind)
    return sla.SparseTensorList(mats), torch.cat(feats), torch.tensor(labels)


class GCN(torch.nn.Module):
    """Two graph convolutions ``H <- relu(A_hat H W)``, mean pooling per graph, linear read-out."""

    def __init__(self, features: int = 3, hidden: int = 16, classes: int = 2):
        super().__init__()
        self.w1 = torch.nn.Linear(features, hidden, dtype=torch.float64)
        self.w2 = torch.nn.Linear(hidden, hidden, dtype=torch.float64)
        self.out = torch.nn.Linear(hidden, classes, dtype=torch.float64)

    def forward(self, graphs: sla.SparseTensorList, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(graphs @ self.w1(x))  # one block-diagonal SpMM for all graphs
        h = torch.relu(graphs @ self.w2(h))
        offsets = graphs.offsets
        sizes = (offsets[1:] - offsets[:-1]).to(x.device)
        graph_id = torch.repeat_interleave(torch.arange(len(graphs), device=x.device), sizes)
        pooled = h.new_zeros(len(graphs), h.shape[1]).index_add(0, graph_id, h) / sizes[:, None]
        return self.out(pooled)


def train(steps: int = 60, lr: float = 0.01, seed: int = 0) -> tuple[GCN, list[float], float]:
    """Train on a fixed dataset; returns ``(model, losses, accuracy)``."""
    torch.manual_seed(seed)
    graphs, x, y = make_dataset(seed=seed)
    model = GCN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(graphs, x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        accuracy = float((model(graphs, x).argmax(1) == y).double().mean())
    return model, losses, accuracy


if __name__ == "__main__":
    _, losses, acc = train()
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} after {len(losses)} steps; training accuracy {acc:.2f}")
