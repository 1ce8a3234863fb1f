"""`Objective`: the uniform handle the trainer uses for every registry entry.

    obj = OBJECTIVES["grpo"]
    cfg = obj.config(kl_coef=0.0)                       # frozen, hashable, static under jit
    batch = obj.prepare(batch, cfg, key)                # rewards -> advantages / counts
    loss, metrics = obj.loss(batch, cfg)                # scalar, {name: scalar}
    w, mets = obj.loss_terms(micro_batch, cfg)          # Weighted(total, weight), {Metric}

`prepare` runs once per full batch (before micro-batching: group statistics and
whitening need the whole batch); `loss_terms` runs per micro-batch and its totals and
weights add exactly (see aggregation.accumulate_value_and_grad).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from reasoning_jax.objectives.types import (Array, Metric, ObjectiveInputs, Weighted,
                                            metric_values, validate)

TermsFn = Callable[[ObjectiveInputs, Any], tuple[Weighted, dict[str, Metric]]]
PrepareFn = Callable[[ObjectiveInputs, Any, Any], ObjectiveInputs]


def reference_fields(config_cls: type) -> tuple[str, ...]:
  """The KL-coefficient fields a config class declares (`reference_fields`, a
  ClassVar; none for objectives without a KL term)."""
  return tuple(getattr(config_cls, "reference_fields", ()))


def reference_coefficients(cfg: Any) -> dict[str, float]:
  """{field: value} of the config's non-zero KL coefficients: each needs the reference
  policy's log-probs (`ObjectiveInputs.ref_logp_BT`)."""
  return {n: getattr(cfg, n) for n in reference_fields(type(cfg)) if getattr(cfg, n)}


def _identity_prepare(inputs: ObjectiveInputs, cfg: Any, key: Any) -> ObjectiveInputs:
  del cfg, key
  return inputs


@dataclasses.dataclass(frozen=True)
class Objective:
  """One named objective.

  Attributes:
    name: registry name.
    config_cls: frozen dataclass of its hyper-parameters, with the spec's defaults.
    terms_fn: `(validated inputs, cfg) -> (Weighted loss, metrics)`.
    prepare_fn: `(inputs, cfg, key) -> inputs` filling advantages / resample counts
      from rewards (identity when the objective needs nothing).
    needs: ObjectiveInputs fields the loss reads (checked, with a clear error).
    prepare_needs: fields `prepare` reads.
    needs_key: whether `prepare` consumes a PRNG key (PAFT resampling).
    description: one line for docs and the CLI.
  """
  name: str
  config_cls: type
  terms_fn: TermsFn
  prepare_fn: PrepareFn = _identity_prepare
  needs: frozenset[str] = frozenset()
  prepare_needs: frozenset[str] = frozenset()
  needs_key: bool = False
  description: str = ""

  def __post_init__(self):
    fields = {f.name for f in dataclasses.fields(self.config_cls)}
    bad = sorted(set(reference_fields(self.config_cls)) - fields)
    if bad:
      raise ValueError(f"objective {self.name!r}: reference_fields {bad} are not fields "
                       f"of {self.config_cls.__name__}")

  def config(self, **overrides: Any) -> Any:
    """The default config with `overrides` applied."""
    return self.config_cls(**overrides)

  def _cfg(self, cfg: Any) -> Any:
    if cfg is None:
      return self.config_cls()
    if not isinstance(cfg, self.config_cls):
      raise TypeError(f"objective {self.name!r} takes a {self.config_cls.__name__}, got "
                      f"{type(cfg).__name__}")
    return cfg

  def prepare(self, inputs: ObjectiveInputs, cfg: Any = None,
              key: Array | None = None) -> ObjectiveInputs:
    """Fills the fields the loss derives from rewards; run on the whole batch."""
    cfg = self._cfg(cfg)
    if self.needs_key and key is None:
      raise ValueError(f"objective {self.name!r} resamples in prepare and needs a PRNG key")
    inputs = validate(inputs, self.prepare_needs, f"{self.name}.prepare")
    return self.prepare_fn(inputs, cfg, key)

  def loss_terms(self, inputs: ObjectiveInputs,
                 cfg: Any = None) -> tuple[Weighted, dict[str, Metric]]:
    """(Weighted loss, metrics) of one (micro-)batch, for exact accumulation."""
    cfg = self._cfg(cfg)
    inputs = validate(inputs, self.needs, self.name)
    with jax.named_scope(f"objective_{self.name}"):
      return self.terms_fn(inputs, cfg)

  def loss(self, inputs: ObjectiveInputs, cfg: Any = None) -> tuple[Array, dict[str, Array]]:
    """(scalar loss, {metric: scalar}) of a whole batch."""
    w, metrics = self.loss_terms(inputs, cfg)
    return w.value, metric_values(metrics)
