"""Device meshes and the logical-axis rules that map param/activation axes onto them."""
from reasoning_jax.sharding.mesh import AXES, make_mesh
from reasoning_jax.sharding.rules import (ROLLOUT_RULES, TRAIN_RULES, ShardingRules,
                                          batch_sharding, check_divisible,
                                          logical_to_spec, named_sharding, replicated)

__all__ = ["AXES", "ROLLOUT_RULES", "TRAIN_RULES", "ShardingRules", "batch_sharding",
           "check_divisible", "logical_to_spec", "make_mesh", "named_sharding",
           "replicated"]
