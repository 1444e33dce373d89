"""``D.save(dir)`` / ``DSparseTensor.load(dir, mesh)``: one safetensors file per rank plus
``metadata.json``; every file is written to a temporary name and renamed (atomic)."""

from __future__ import annotations

import json
import os
import tempfile

import torch
import torch.distributed as dist

from .comm import all_reduce
from .halo import HaloPlan

__all__ = ["load", "save"]

FORMAT = "sla.dsparse/1"


def _atomic(path: str, write) -> None:
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _safetensors():
    try:
        from safetensors.torch import load_file, save_file
    except ImportError as exc:
        raise ImportError("DSparseTensor.save/load need safetensors: pip install safetensors") from exc
    return load_file, save_file


def save(D, directory: str | os.PathLike) -> None:
    """Write this rank's piece to ``directory/partition_<rank>.safetensors`` (collective)."""
    _, save_file = _safetensors()
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    loc = D.local.detach().to("cpu")
    t = {
        "values": loc.values.contiguous(),
        "row": loc.row.long().contiguous(),
        "col": loc.col.long().contiguous(),
        "owned": D.owned.contiguous(),
        "ghosts": D.plan.ghosts.cpu().contiguous(),
    }
    for q, idx in D.plan.send.items():
        t[f"send_{q}"] = idx.cpu().long().contiguous()
    if D.overlap is not None:
        ov = D.overlap
        om = ov.matrix.to("cpu")
        t.update(ov_values=om.values.contiguous(), ov_row=om.row.long(), ov_col=om.col.long())
        t["ov_ghosts"] = ov.plan.ghosts.cpu().contiguous()
        for q, idx in ov.plan.send.items():
            t[f"ov_send_{q}"] = idx.cpu().long().contiguous()
    meta = {
        "recv": {str(q): c for q, c in D.plan.recv.items()},
        "ov_recv": {str(q): c for q, c in D.overlap.plan.recv.items()} if D.overlap is not None else None,
        "ov_layers": D.overlap.layers if D.overlap is not None else 0,
        "ov_size": list(D.overlap.matrix.shape) if D.overlap is not None else None,
    }
    _atomic(
        os.path.join(directory, f"partition_{D.rank}.safetensors"),
        lambda p: save_file(t, p, metadata={"sla": json.dumps(meta)}),
    )
    ok = all_reduce(torch.ones(1, device=D.device), group=D.group, timeout=D.timeout)  # every piece written
    if D.rank == 0:
        info = {
            "format": FORMAT,
            "shape": list(D.shape),
            "num_partitions": D.world_size,
            "sizes": D.sizes,
            "dtype": str(D.dtype).replace("torch.", ""),
            "partition_method": D.method,
            "complete": int(ok) == D.world_size,
        }
        _atomic(os.path.join(directory, "metadata.json"), lambda p: open(p, "w").write(json.dumps(info, indent=1)))
    dist.barrier(group=D.group)


def load(cls, directory: str | os.PathLike, mesh=None, device=None, timeout=None):
    """This rank's piece of a directory written by :func:`save` (same number of ranks; collective)."""
    from ..sparse import SparseTensor
    from .dsparse import _mesh_and_group
    from .schwarz import OverlapBlock

    load_file, _ = _safetensors()
    directory = os.fspath(directory)
    path = os.path.join(directory, "metadata.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{directory!r} holds no metadata.json: not a saved DSparseTensor")
    with open(path) as f:
        info = json.load(f)
    if info.get("format") != FORMAT:
        raise ValueError(f"{path}: format {info.get('format')!r}, expected {FORMAT!r}")
    mesh, group = _mesh_and_group(mesh, "cpu")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if world != info["num_partitions"]:
        raise ValueError(
            f"{directory!r} was saved on {info['num_partitions']} ranks, loading on {world}: "
            "load on the same number of ranks (or load the full_tensor() and partition again)"
        )
    from safetensors import safe_open

    fname = os.path.join(directory, f"partition_{rank}.safetensors")
    with safe_open(fname, "pt") as f:
        meta = json.loads(f.metadata()["sla"])
    t = load_file(fname)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    n_owned = t["owned"].numel()
    send = {int(k[5:]): v for k, v in t.items() if k.startswith("send_")}
    plan = HaloPlan(rank, n_owned, t["ghosts"], {int(q): c for q, c in meta["recv"].items()}, send)
    local = SparseTensor(t["values"], t["row"], t["col"], (n_owned, n_owned + plan.n_ghost)).to(dev)
    ov = None
    if meta["ov_recv"] is not None:
        osend = {int(k[8:]): v for k, v in t.items() if k.startswith("ov_send_")}
        oplan = HaloPlan(rank, n_owned, t["ov_ghosts"], {int(q): c for q, c in meta["ov_recv"].items()}, osend)
        om = SparseTensor(t["ov_values"], t["ov_row"], t["ov_col"], tuple(meta["ov_size"])).to(dev)
        ov = OverlapBlock(oplan.to(dev), om, meta["ov_layers"])
    return cls(
        local,
        plan,
        t["owned"],
        info["sizes"],
        tuple(info["shape"]),
        mesh,
        group,
        None,
        info["partition_method"],
        ov,
        timeout,
    )
