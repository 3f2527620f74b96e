"""Trigger-form / REST ``conf`` params, JSON-schema validated by Airflow (a bad value is a 400)."""

from __future__ import annotations

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


def rollback_params(shard_ids: list[str]) -> dict[str, Any]:
    from airflow.sdk import Param

    return {
        "shards": Param(
            [],
            type="array",
            items={"type": "string", "enum": shard_ids},
            uniqueItems=True,
            title="Shards",
            description=(
                "Shards to roll back; empty means every active shard whose history says the migration is there."
            ),
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Every shard reports whether it would roll back; no DDL runs.",
        ),
    }
