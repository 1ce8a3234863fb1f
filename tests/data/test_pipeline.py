"""grain pipeline: resumable iterator state, per-host sharding, epochs and batching."""
import numpy as np
import pytest

from reasoning_jax.data import pipeline
from reasoning_jax.data.pipeline import PipelineConfig, make_dataset


def _source(n):
  return [{"id": f"ex{i}", "x": i, "vec": np.arange(3) + i} for i in range(n)]


def _take(it, k):
  return [next(it) for _ in range(k)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for ba, bb in zip(a, b):
    assert ba["id"] == bb["id"]
    np.testing.assert_array_equal(ba["x"], bb["x"])
    np.testing.assert_array_equal(ba["vec"], bb["vec"])


@pytest.mark.parametrize("k", [0, 1, 3, 7])
def test_resume_from_state_continues_exactly(k):
  cfg = PipelineConfig(batch_size=4, seed=3, num_epochs=None, num_threads=2)
  ds = make_dataset(_source(10), cfg, shard_index=0, shard_count=1)
  it = iter(ds)
  _take(it, k)
  # The state must survive a checkpoint round-trip as bytes.
  state = pipeline.state_from_bytes(pipeline.state_to_bytes(it.get_state()))
  expected = _take(it, 6)  # crosses epoch boundaries (10 examples, 4 per batch)
  fresh = iter(make_dataset(_source(10), cfg, shard_index=0, shard_count=1))
  fresh.set_state(state)
  _assert_batches_equal(_take(fresh, 6), expected)


def test_batches_and_collate_shapes():
  cfg = PipelineConfig(batch_size=4, shuffle=False, num_epochs=1, drop_remainder=False)
  batches = list(make_dataset(_source(10), cfg, shard_index=0, shard_count=1))
  assert [len(b["id"]) for b in batches] == [4, 4, 2]
  assert batches[0]["id"] == ["ex0", "ex1", "ex2", "ex3"]
  np.testing.assert_array_equal(batches[2]["x"], [8, 9])
  np.testing.assert_array_equal(batches[1]["vec"], [[4, 5, 6], [5, 6, 7], [6, 7, 8], [7, 8, 9]])


def test_each_epoch_is_a_permutation_and_epochs_differ():
  cfg = PipelineConfig(batch_size=5, seed=0, num_epochs=2)
  batches = list(make_dataset(_source(10), cfg, shard_index=0, shard_count=1))
  xs = np.concatenate([b["x"] for b in batches])
  assert len(xs) == 20
  assert sorted(xs[:10]) == list(range(10)) and sorted(xs[10:]) == list(range(10))
  assert list(xs[:10]) != list(xs[10:])
  assert list(xs[:10]) != list(range(10))


def test_same_seed_same_order_different_seed_different_order():
  def xs(seed):
    cfg = PipelineConfig(batch_size=10, seed=seed, num_epochs=1)
    return list(next(iter(make_dataset(_source(10), cfg, shard_index=0, shard_count=1)))["x"])
  assert xs(1) == xs(1)
  assert xs(1) != xs(2)


def test_two_hosts_disjoint_and_cover_epoch():
  cfg = PipelineConfig(batch_size=3, seed=7, num_epochs=1)
  seen = []
  for host in range(2):
    batches = list(make_dataset(_source(12), cfg, shard_index=host, shard_count=2))
    assert len(batches) == 2  # 6 examples per host, 3 per batch
    seen.append({i for b in batches for i in b["id"]})
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == {f"ex{i}" for i in range(12)}


def test_uneven_shards_drop_or_keep_remainder():
  src = _source(7)
  keep = PipelineConfig(batch_size=1, num_epochs=1, shuffle=False, shard_drop_remainder=False)
  ids = [[b["id"][0] for b in make_dataset(src, keep, shard_index=h, shard_count=2)]
         for h in range(2)]
  assert ids == [["ex0", "ex2", "ex4", "ex6"], ["ex1", "ex3", "ex5"]]
  drop = PipelineConfig(batch_size=1, num_epochs=1, shuffle=False)
  sizes = [len(list(make_dataset(src, drop, shard_index=h, shard_count=2))) for h in range(2)]
  assert sizes == [3, 3]


def test_resume_on_a_sharded_host():
  cfg = PipelineConfig(batch_size=2, seed=5)
  ds = make_dataset(_source(9), cfg, shard_index=1, shard_count=3)
  it = iter(ds)
  _take(it, 4)
  state = it.get_state()
  expected = _take(it, 3)
  it2 = iter(ds)
  it2.set_state(state)
  _assert_batches_equal(_take(it2, 3), expected)


def test_transform_runs_per_example():
  cfg = PipelineConfig(batch_size=2, shuffle=False, num_epochs=1)
  ds = make_dataset(_source(4), cfg, shard_index=0, shard_count=1,
                    transform=lambda ex: {"y": ex["x"] * 10})
  np.testing.assert_array_equal(next(iter(ds))["y"], [0, 10])


def test_bad_arguments_are_clear():
  with pytest.raises(ValueError, match="shard_index must be in"):
    make_dataset(_source(4), PipelineConfig(batch_size=1), shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match="batch_size 8 is larger"):
    make_dataset(_source(4), PipelineConfig(batch_size=8, num_epochs=1), shard_index=0,
                 shard_count=1)
  with pytest.raises(ValueError, match="different fields"):
    pipeline.collate([{"a": 1}, {"b": 2}])
