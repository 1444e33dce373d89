"""Domain decomposition over torch.distributed: METIS partitions, halo exchange, DSparseTensor."""

from .dsparse import DSparseTensor
from .halo import HaloPlan, build_plan, exchange, reverse_exchange
from .partition import Partition, partition

__all__ = ["DSparseTensor", "Partition", "partition", "HaloPlan", "build_plan", "exchange", "reverse_exchange"]
