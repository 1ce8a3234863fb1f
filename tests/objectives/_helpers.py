"""Test helpers shared by the objectives tests."""
import jax
import jax.numpy as jnp
import numpy as np

from reasoning_jax.objectives import ObjectiveInputs


def x64():
  """float64 for exact toy-model checks, only inside a `with` block."""
  if hasattr(jax, "enable_x64"):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64  # older jax
  return enable_x64()


def inputs(logp, mask, **kw) -> ObjectiveInputs:
  """ObjectiveInputs from nested lists / arrays (float32)."""
  conv = {k: (jnp.asarray(v, jnp.float32) if v is not None and k != "group_size" else v)
          for k, v in kw.items()}
  return ObjectiveInputs(logp_BT=jnp.asarray(logp, jnp.float32),
                         mask_BT=jnp.asarray(mask, jnp.float32), **conv)


def pad_T(x, extra: int, value: float):
  """Appends `extra` padding columns filled with `value`."""
  x = np.asarray(x)
  return np.concatenate([x, np.full((x.shape[0], extra), value, x.dtype)], axis=1)

