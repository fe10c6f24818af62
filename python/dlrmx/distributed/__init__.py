"""Training on several processes (`torch.distributed`, gloo or MPI): joining the job the
launcher started, the placement of the tables, the sharded embedding collection, and each
rank's share of the data."""

from dlrmx.distributed.launch import (Dist, DistributedError, finish, init, split_bounds,
                                      threads_per_rank)
from dlrmx.distributed.plan import Placement, place
from dlrmx.distributed.sharded import ShardedEmbeddingBagCollection

__all__ = ["Dist", "DistributedError", "Placement", "ShardedEmbeddingBagCollection", "finish", "init", "place",
           "split_bounds", "threads_per_rank"]
