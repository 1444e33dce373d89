"""Distributed sparse matrices on ``torch.distributed`` (gloo on CPU, NCCL on GPUs).

:class:`DSparseTensor` shards rows over a 1-D ``DeviceMesh`` (METIS, contiguous or RCB
partitions); vectors are ``DTensor[Shard(0)]``; products are one halo exchange plus a
local product; solves run the shared Krylov methods with all-reduced inner products,
preconditioned by block Jacobi or a two-level overlapping Schwarz method.
"""

from .batch import DSparseBatch, DSparseTensorList
from .comm import COUNTS, DistributedTimeout
from .dsparse import DSparseMatrix, DSparseTensor
from .halo import HaloPlan, build_plan, exchange, reverse_exchange
from .partition import Partition, partition

__all__ = [
    "COUNTS",
    "DSparseBatch",
    "DSparseMatrix",
    "DSparseTensor",
    "DSparseTensorList",
    "DistributedTimeout",
    "HaloPlan",
    "Partition",
    "build_plan",
    "exchange",
    "partition",
    "reverse_exchange",
]
