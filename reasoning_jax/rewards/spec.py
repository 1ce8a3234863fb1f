"""Reward choices as data: what an experiment file names, checked before any work.

A gin experiment selects the RL training reward with a registry name and its options
(`TaskSpec.reward = "laser"`, `TaskSpec.reward_kwargs = (("target_length", 512),)`);
`"weighted"` sums several, each `(weight, name)` or `(weight, name, options)`:

    TaskSpec.reward = "weighted"
    TaskSpec.reward_kwargs = (("components", ((1.0, "task"),
                                              (0.5, "think_format"))),)

`parse_reward_spec` checks every name, option and weight and builds the reward once (its
own value checks run too), so a typo stops the run before data or model are touched,
with an error naming the field, the bad option and the allowed ones. The component name
"task" stands for the task's own verifier of each example (it depends on the example,
e.g. a cold-start depth), resolved by `RewardSpec.resolve`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from reasoning_jax.rewards.registry import REWARDS, get_reward

TASK = "task"


def _pairs(options: Any, where: str) -> tuple[tuple[str, Any], ...]:
  """Options as sorted (key, value) pairs (hashable, so examples group by them)."""
  if isinstance(options, Mapping):
    items = list(options.items())
  else:
    items = list(options or ())
    if not all(isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], str)
               for p in items):
      raise ValueError(f"{where} must be (name, value) pairs or a dict, got "
                       f"{options!r:.120}")
  keys = [k for k, _ in items]
  if len(set(keys)) != len(keys):
    raise ValueError(f"{where} names an option twice: {keys}")
  return tuple(sorted((k, _frozen(v)) for k, v in items))


def _frozen(v: Any) -> Any:
  """Lists (gin and JSON write them) as tuples, recursively."""
  return tuple(_frozen(x) for x in v) if isinstance(v, (list, tuple)) else v


@dataclasses.dataclass(frozen=True)
class RewardSpec:
  """A checked reward choice: `name`, its `options` (sorted pairs); for "weighted" the
  `components` as (weight, RewardSpec)."""
  name: str
  options: tuple[tuple[str, Any], ...] = ()
  components: tuple[tuple[float, "RewardSpec"], ...] = ()

  def names(self) -> tuple[str, ...]:
    """This reward's name and its components' names, recursively."""
    return (self.name,) + tuple(n for _, c in self.components for n in c.names())

  def text(self) -> tuple[str, ...]:
    """The markup the chosen rewards read in a completion."""
    return tuple(t for n in self.names() if n != TASK for t in REWARDS[n].text)

  def metadata(self) -> tuple[str, ...]:
    """The `RewardItem.metadata` keys the chosen rewards read."""
    return tuple(k for n in self.names() if n != TASK for k in REWARDS[n].metadata)

  def resolve(self, defaults: Mapping[str, Any],
              verifier: tuple[str, Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
    """(name, kwargs) for `get_reward` on one example.

    `defaults` fill options this reward has and the spec leaves unset (the task's
    end-of-rationale marker as `answer_after` / `marker`); "task" becomes `verifier`,
    the example's own (name, kwargs).
    """
    if self.name == TASK:
      return verifier[0], dict(verifier[1])
    if self.name == "weighted":
      comps = []
      for w, c in self.components:
        n, kw = c.resolve(defaults, verifier)
        comps.append((w, n, _pairs(kw, n)))
      return "weighted", {"components": tuple(comps)}
    opts = REWARDS[self.name].options
    kwargs = {k: v for k, v in defaults.items() if k in opts}
    kwargs.update(self.options)
    return self.name, kwargs


def parse_reward_spec(name: str, options: Any = (), *, field: str = "reward",
                      allow_task: bool = True) -> RewardSpec:
  """Checks a reward choice and returns it as a `RewardSpec`.

  Args:
    name: a `REWARDS` name ("weighted" sums `components`).
    options: that reward's options, (key, value) pairs or a dict.
    field: the config field the name came from; errors name it, and its options as
      `<field>_kwargs`.
    allow_task: whether "task" (the task's own verifier) may be chosen.

  Raises:
    ValueError: an unknown name or option (the allowed ones are listed), a bad value,
      or a malformed weighted sum.
  """
  return _parse(name, options, field, f"{field}_kwargs", allow_task)


def reward_spec_for(name: str, options: Any, *, field: str, metadata: tuple,
                    source: str) -> RewardSpec:
  """`parse_reward_spec`, refusing a reward that reads example metadata the task's
  examples do not carry (`metadata`: what they have; `source`: what they are, for the
  error), since it would score every rollout alike and train nothing."""
  spec = parse_reward_spec(name, options, field=field)
  lacking = sorted(set(spec.metadata()) - set(metadata))
  if lacking:
    raise ValueError(f"{field} = {name!r} needs example metadata {lacking}, which "
                     f"{source} examples do not carry (they have {list(metadata)})")
  return spec


def _parse(name: Any, options: Any, name_at: str, options_at: str,
           allow_task: bool) -> RewardSpec:
  known = sorted(REWARDS) + ([TASK] if allow_task else [])
  if name not in known:
    raise ValueError(f"{name_at} = {name!r} is not a reward; choose one of {known}")
  pairs = _pairs(options, options_at)
  if name == TASK:
    if pairs:
      raise ValueError(f"{options_at}: 'task' (the task's own verifier) takes no options")
    return RewardSpec(TASK)
  allowed = REWARDS[name].options
  unknown = sorted(k for k, _ in pairs if k not in allowed)
  if unknown:
    raise ValueError(f"{options_at}: reward {name!r} has no option {unknown[0]!r}; its "
                     f"options are {list(allowed)}")
  if name == "weighted":
    return _weighted(dict(pairs).get("components"), options_at, allow_task)
  try:
    get_reward(name, **dict(pairs))  # the reward's own value checks (styles, forms)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{options_at}: {e}") from None
  return RewardSpec(name, pairs)


def _weighted(components: Any, where: str, allow_task: bool) -> RewardSpec:
  """The spec of a weighted sum; each component is (weight, name[, options])."""
  if not components:
    raise ValueError(f"{where}: reward 'weighted' needs components=((weight, name), "
                     "(weight, name, options), ...)")
  out = []
  for i, c in enumerate(components):
    here = f"{where} components[{i}]"
    if (not isinstance(c, (tuple, list)) or len(c) not in (2, 3)
        or not isinstance(c[1], str)):
      raise ValueError(f"{here} must be (weight, name) or (weight, name, options), got "
                       f"{c!r:.120}")
    try:
      w = float(c[0])
    except (TypeError, ValueError):
      w = math.nan
    if not math.isfinite(w):
      raise ValueError(f"{here}: the weight must be a finite number, got {c[0]!r}")
    if c[1] == "weighted":
      raise ValueError(f"{here}: nest no weighted sums; list every component once")
    sub = _parse(c[1], c[2] if len(c) == 3 else (), here, f"{here} options",
                 allow_task)
    out.append((w, sub))
  return RewardSpec("weighted", components=tuple(out))
