"""Placement: device meshes, the logical-axis rules that map param/activation axes onto
them, and the shardings of train state, batches and the sampler's rollouts.

Depends on jax (and optax for the optimizer state's layout) only: callers pass shapes
and shardings, never model configs.
"""
from reasoning_jax.sharding.batch import (axis_size, batch_shards, batch_sharding_tree,
                                          check_batch, local_rows, shard_batch)
from reasoning_jax.sharding.mesh import AXES, build_mesh, make_mesh
from reasoning_jax.sharding.rollout import CACHE_AXES, RolloutSharding
from reasoning_jax.sharding.rules import (ROLLOUT_RULES, TRAIN_RULES, ShardingRules,
                                          batch_sharding, check_divisible,
                                          logical_to_spec, named_sharding, replicated)
from reasoning_jax.sharding.state import (init_opt_state, opt_state_shardings,
                                          state_shardings)

__all__ = ["AXES", "CACHE_AXES", "ROLLOUT_RULES", "TRAIN_RULES", "RolloutSharding",
           "ShardingRules", "axis_size", "batch_shards", "batch_sharding",
           "batch_sharding_tree", "build_mesh", "check_batch", "check_divisible",
           "init_opt_state", "local_rows", "logical_to_spec", "make_mesh",
           "named_sharding", "opt_state_shardings", "replicated", "shard_batch",
           "state_shardings"]
