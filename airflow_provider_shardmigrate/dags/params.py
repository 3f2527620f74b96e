"""Trigger-form / REST ``conf`` params, JSON-schema validated by Airflow (a bad value is a 400)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from airflow_provider_shardmigrate.core.options import MigrationOptions


def migration_params(options: MigrationOptions) -> dict[str, Any]:
    from airflow.sdk import Param

    return {
        "stop_on_first_failure": Param(
            options.stop_on_first_failure,
            type="boolean",
            title="Stop on first failure",
            description="When a shard fails, shards that have not started yet are left pending.",
        ),
        "auto_rollback": Param(
            options.auto_rollback,
            type="boolean",
            title="Auto-rollback",
            description="If the rollout does not fully succeed, run down on the shards this run applied.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Every shard reports what it would do (would_apply / already_applied / failed); no DDL runs.",
        ),
        "max_failed_shards": Param(
            options.max_failed_shards,
            type=["null", "integer"],
            minimum=0,
            title="Max failed shards",
            description="Once more shards than this have failed, no further shard starts (empty: no limit; "
            "stop_on_first_failure is the same as 0).",
        ),
        "max_failure_ratio": Param(
            options.max_failure_ratio,
            type=["null", "number"],
            exclusiveMinimum=0,
            maximum=1,
            title="Max failure ratio",
            description="Once failed shards pass this share of the targeted shards (0 < r <= 1), no further "
            "shard starts (empty: no limit).",
        ),
    }


def rollback_params(shard_ids: list[str], inactive: Collection[str] = ()) -> dict[str, Any]:
    """The rollback DAG's Params: ``shards``, a pick-list of the topology's shard ids plus ``all`` (the
    trigger form renders an array Param with ``examples`` as a multi-select), and ``dry_run``.

    The ids are not an ``enum``: JSON schema compares case-sensitively, and shard ids match
    case-insensitively; the preflight checks the selection (core/selection.py) before anything runs.
    """
    from airflow.sdk import Param

    from airflow_provider_shardmigrate.core.selection import ALL, SELECTION_PARAM

    shown = {ALL: f"{ALL} (every active shard)"}
    shown.update({shard_id: f"{shard_id} (inactive)" for shard_id in inactive})
    return {
        SELECTION_PARAM: Param(
            [],
            type="array",
            items={"type": "string", "minLength": 1},
            uniqueItems=True,
            examples=[ALL, *shard_ids],
            values_display=shown,
            title="Shards to roll back",
            description=(
                f"Pick the shards to roll back, or '{ALL}' for every active shard (an inactive shard is rolled "
                "back only when picked). Ids match case-insensitively. An empty selection rolls back nothing: "
                "the run is refused and says so."
            ),
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Every selected shard reports whether it would roll back; no DDL runs.",
        ),
    }
