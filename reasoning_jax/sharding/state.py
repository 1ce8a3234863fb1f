"""Train state shardings: the optimizer state laid out beside the params.

Param shardings come from the params' single declaration
(`reasoning_jax.model.param_shardings`, under a rules table of `sharding.rules`); the
optimizer state follows them leaf by leaf, so an update's outputs come back in the
layout its inputs went in (which donation relies on).
"""
from __future__ import annotations

import jax
import optax
from jax.sharding import Mesh, NamedSharding

from reasoning_jax.sharding.rules import replicated


def _is_sharding(x) -> bool:
  return isinstance(x, NamedSharding)


def opt_state_shardings(tx: optax.GradientTransformation, params, param_shardings,
                        mesh: Mesh):
  """Shardings of `tx.init(params)`.

  Every params-shaped subtree (Adam's mu and nu) gets `param_shardings` leaf by leaf;
  everything else (step counts, schedule state) is replicated on `mesh`. `params` may
  be arrays or `jax.ShapeDtypeStruct`s; nothing is computed.
  """
  abstract = jax.eval_shape(tx.init, params)
  rep = replicated(mesh)
  return optax.tree_map_params(tx, lambda _, s: s, abstract, param_shardings,
                               transform_non_params=lambda _: rep, is_leaf=_is_sharding)


def state_shardings(tx: optax.GradientTransformation, params, param_shardings,
                    mesh: Mesh):
  """(param shardings, optimizer-state shardings): the `state_shardings` argument of
  the jitted steps, so that updated state comes back in the layout it went in."""
  return param_shardings, opt_state_shardings(tx, params, param_shardings, mesh)


def init_opt_state(tx: optax.GradientTransformation, params, param_shardings,
                   mesh: Mesh):
  """`tx.init(params)` created directly in its sharded layout, never whole on one
  device (Adam's moments are twice the params in float32)."""
  out = opt_state_shardings(tx, params, param_shardings, mesh)
  return jax.jit(tx.init, out_shardings=out)(params)
