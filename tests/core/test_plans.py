"""Strategy plans: waves, batches, canary choice, inactive shards, concurrency."""

from __future__ import annotations

import pytest

from airflow_provider_shardmigrate.core.errors import ErrorCode, InvalidScriptError, InvalidTopologyError
from airflow_provider_shardmigrate.core.options import MigrationOptions, Strategy
from airflow_provider_shardmigrate.core.plans import WaveKind, plan_rollout
from airflow_provider_shardmigrate.core.topology import Shard

ALL_STRATEGIES = list(Strategy)


def fleet(n: int, *, inactive: tuple[int, ...] = ()) -> list[Shard]:
    return [Shard(id=f"shard-{i}", conn_id=f"shard_{i}", active=i not in inactive) for i in range(n)]


def ids(shards: tuple[Shard, ...] | list[Shard]) -> list[str]:
    return [shard.id for shard in shards]


def opts(strategy: Strategy, **kwargs: object) -> MigrationOptions:
    return MigrationOptions(strategy=strategy, **kwargs)  # type: ignore[arg-type]


# --- zero shards -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_no_shard_at_all_is_invalid_topology(strategy: Strategy) -> None:
    with pytest.raises(InvalidTopologyError) as info:
        plan_rollout([], opts(strategy))
    assert info.value.code == ErrorCode.INVALID_TOPOLOGY
    assert info.value.code == "shardmigrate.invalid_topology"
    assert "no active shard" in str(info.value)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_only_inactive_shards_is_invalid_topology(strategy: Strategy) -> None:
    with pytest.raises(InvalidTopologyError) as info:
        plan_rollout(fleet(3, inactive=(0, 1, 2)), opts(strategy))
    assert info.value.code == "shardmigrate.invalid_topology"


# --- every strategy: targets are the active shards in topology order ----------------------------------------


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize("n", [1, 2, 3, 10, 1000])
def test_targets_are_active_shards_in_topology_order(strategy: Strategy, n: int) -> None:
    shards = fleet(n)
    plan = plan_rollout(shards, opts(strategy))
    assert plan.strategy is strategy
    assert ids(plan.targets) == ids(shards)
    assert len({shard.key for shard in plan.targets}) == n  # nobody twice
    assert [wave.index for wave in plan.waves] == list(range(len(plan.waves)))
    assert all(wave.shards for wave in plan.waves)  # no empty wave
    assert all(1 <= wave.concurrency <= len(wave.shards) for wave in plan.waves)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_topology_order_is_kept_even_when_ids_do_not_sort(strategy: Strategy) -> None:
    shards = [Shard("zeta", "z"), Shard("alpha", "a"), Shard("Mid", "m"), Shard("beta", "b")]
    plan = plan_rollout(shards, opts(strategy, max_parallelism=2))
    assert ids(plan.targets) == ["zeta", "alpha", "Mid", "beta"]


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_inactive_shards_are_not_targeted(strategy: Strategy) -> None:
    shards = fleet(6, inactive=(1, 4))
    plan = plan_rollout(shards, opts(strategy, max_parallelism=2))
    assert ids(plan.targets) == ["shard-0", "shard-2", "shard-3", "shard-5"]
    assert all(shard.active for shard in plan.targets)


# --- sequential -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 10, 1000])
def test_sequential_is_one_wave_per_shard(n: int) -> None:
    plan = plan_rollout(fleet(n), opts(Strategy.SEQUENTIAL, max_parallelism=8))
    assert len(plan.waves) == n
    assert all(wave.kind is WaveKind.SHARD for wave in plan.waves)
    assert all(wave.concurrency == 1 and len(wave.shards) == 1 for wave in plan.waves)
    assert [wave.shards[0].id for wave in plan.waves] == [f"shard-{i}" for i in range(n)]
    assert plan.waves[0].label == "shard shard-0"
    assert plan.canary is None


def test_sequential_is_the_default_strategy() -> None:
    plan = plan_rollout(fleet(3), MigrationOptions())
    assert plan.strategy is Strategy.SEQUENTIAL
    assert plan.max_parallelism == 4
    assert len(plan.waves) == 3


# --- parallel ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "width", "expected"),
    [(1, 4, 1), (2, 4, 2), (10, 4, 4), (1000, 4, 4), (1000, 1, 1), (3, 50, 3), (1000, 1000, 1000)],
)
def test_parallel_is_one_throttled_wave(n: int, width: int, expected: int) -> None:
    plan = plan_rollout(fleet(n), opts(Strategy.PARALLEL, max_parallelism=width))
    assert len(plan.waves) == 1
    wave = plan.waves[0]
    assert wave.kind is WaveKind.ALL
    assert wave.label == "all"
    assert len(wave.shards) == n
    assert wave.concurrency == expected
    assert plan.max_parallelism == width
    assert plan.canary is None


def test_parallel_concurrency_counts_active_shards_only() -> None:
    plan = plan_rollout(fleet(5, inactive=(0, 1, 2)), opts(Strategy.PARALLEL, max_parallelism=4))
    assert plan.waves[0].concurrency == 2


# --- rolling ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "width", "sizes"),
    [
        (1, 4, [1]),
        (2, 4, [2]),
        (8, 4, [4, 4]),  # divisible
        (10, 4, [4, 4, 2]),  # not divisible: a smaller last batch
        (10, 3, [3, 3, 3, 1]),
        (3, 10, [3]),  # max_parallelism > n: one batch
        (4, 4, [4]),  # exactly one full batch
        (5, 1, [1, 1, 1, 1, 1]),  # max_parallelism 1: one shard per batch
        (1000, 4, [4] * 250),
        (1000, 7, [7] * 142 + [6]),
    ],
)
def test_rolling_batch_boundaries(n: int, width: int, sizes: list[int]) -> None:
    shards = fleet(n)
    plan = plan_rollout(shards, opts(Strategy.ROLLING, max_parallelism=width))
    assert [len(wave.shards) for wave in plan.waves] == sizes
    assert [wave.concurrency for wave in plan.waves] == sizes
    assert all(wave.kind is WaveKind.BATCH for wave in plan.waves)
    # batches are consecutive slices of the topology order
    start = 0
    for wave, size in zip(plan.waves, sizes, strict=True):
        assert ids(wave.shards) == ids(shards[start : start + size])
        start += size
    assert plan.waves[0].label == "batch 1"
    assert plan.waves[-1].label == f"batch {len(sizes)}"


def test_rolling_batches_skip_inactive_shards_without_holes() -> None:
    plan = plan_rollout(fleet(7, inactive=(1, 3)), opts(Strategy.ROLLING, max_parallelism=2))
    assert [ids(wave.shards) for wave in plan.waves] == [
        ["shard-0", "shard-2"],
        ["shard-4", "shard-5"],
        ["shard-6"],
    ]


# --- canary_first -----------------------------------------------------------------------------------------


def test_canary_first_single_shard_has_only_the_canary_wave() -> None:
    plan = plan_rollout(fleet(1), opts(Strategy.CANARY_FIRST))
    assert [wave.kind for wave in plan.waves] == [WaveKind.CANARY]
    assert plan.canary is not None and plan.canary.id == "shard-0"
    assert plan.waves[0].concurrency == 1
    assert plan.waves[0].label == "canary"


@pytest.mark.parametrize(("n", "width", "rest_concurrency"), [(2, 4, 1), (10, 4, 4), (1000, 16, 16), (3, 1, 1)])
def test_canary_first_default_canary_then_the_rest(n: int, width: int, rest_concurrency: int) -> None:
    plan = plan_rollout(fleet(n), opts(Strategy.CANARY_FIRST, max_parallelism=width))
    assert [wave.kind for wave in plan.waves] == [WaveKind.CANARY, WaveKind.REST]
    canary, rest = plan.waves
    assert ids(canary.shards) == ["shard-0"]
    assert canary.concurrency == 1
    assert ids(rest.shards) == [f"shard-{i}" for i in range(1, n)]
    assert rest.concurrency == rest_concurrency
    assert rest.label == "rest"
    assert plan.canary == canary.shards[0]


def test_default_canary_is_the_first_active_shard() -> None:
    plan = plan_rollout(fleet(4, inactive=(0,)), opts(Strategy.CANARY_FIRST))
    assert plan.canary is not None and plan.canary.id == "shard-1"
    assert ids(plan.waves[1].shards) == ["shard-2", "shard-3"]


def test_canary_override_is_case_insensitive_and_keeps_the_rest_in_order() -> None:
    plan = plan_rollout(fleet(5), opts(Strategy.CANARY_FIRST, canary="SHARD-3"))
    assert plan.canary is not None and plan.canary.id == "shard-3"  # the topology's spelling
    assert ids(plan.waves[1].shards) == ["shard-0", "shard-1", "shard-2", "shard-4"]
    assert ids(plan.targets) == ["shard-3", "shard-0", "shard-1", "shard-2", "shard-4"]


def test_canary_override_may_be_the_last_shard() -> None:
    plan = plan_rollout(fleet(3), opts(Strategy.CANARY_FIRST, canary="shard-2"))
    assert plan.canary is not None and plan.canary.id == "shard-2"
    assert ids(plan.waves[1].shards) == ["shard-0", "shard-1"]


@pytest.mark.parametrize("canary", ["shard-99", "shard-1"])  # unknown, inactive
def test_unknown_or_inactive_canary_is_invalid_script(canary: str) -> None:
    with pytest.raises(InvalidScriptError) as info:
        plan_rollout(fleet(3, inactive=(1,)), opts(Strategy.CANARY_FIRST, canary=canary))
    assert info.value.code == "shardmigrate.invalid_script"
    assert f"canary '{canary}'" in str(info.value)
    assert "shard-0" in str(info.value)  # lists the active shards to choose from


def test_unknown_canary_message_lists_at_most_ten_active_shards() -> None:
    with pytest.raises(InvalidScriptError) as info:
        plan_rollout(fleet(50), opts(Strategy.CANARY_FIRST, canary="nope"))
    text = str(info.value)
    assert "shard-0, shard-1," in text
    assert "shard-9, ..." in text
    assert "shard-10" not in text


@pytest.mark.parametrize("strategy", [Strategy.SEQUENTIAL, Strategy.PARALLEL, Strategy.ROLLING])
def test_canary_option_is_ignored_by_other_strategies(strategy: Strategy) -> None:
    plan = plan_rollout(fleet(3), opts(strategy, canary="does-not-exist"))
    assert plan.canary is None
    assert ids(plan.targets) == ["shard-0", "shard-1", "shard-2"]


def test_plan_is_fast_for_a_large_fleet() -> None:
    # 10,000 shards: planning is a pure function and must stay linear.
    import time

    shards = fleet(10_000)
    started = time.perf_counter()
    for strategy in ALL_STRATEGIES:
        plan = plan_rollout(shards, opts(strategy, max_parallelism=16, canary="shard-9999"))
        assert len(plan.targets) == 10_000
    assert time.perf_counter() - started < 2.0
