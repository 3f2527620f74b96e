"""The status DAG's task: read every shard's history and publish the shard x migration matrix as its XCom
(docs/contracts.md, fleet status), so the UI shows the fleet without opening a shard connection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class FleetStatusOperator(BaseOperator):
    """Publish the fleet status matrix (``return_value``), read from every shard's history table.

    The migrations folder and the topology are read when the task runs, so the matrix shows the fleet and
    the folder as they are then. Shards are read read-only, ``max_workers`` at a time, each within
    ``timeout`` seconds: an unreachable shard is a ``?`` row with its error, never a hung task.

    :param migrations_path: The migrations folder.
    :param topology_path: The topology file.
    :param timeout: Seconds one shard may take (connect + read).
    :param max_workers: Shards read at once.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e0f0f8"

    def __init__(
        self,
        *,
        migrations_path: str,
        topology_path: str,
        timeout: float = 30.0,
        max_workers: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.migrations_path = migrations_path
        self.topology_path = topology_path
        self.timeout = timeout
        self.max_workers = max_workers

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_shardmigrate.core.fleet_status import fleet_status
        from airflow_provider_shardmigrate.core.scripts import folder_ids
        from airflow_provider_shardmigrate.core.topology import load_topology
        from airflow_provider_shardmigrate.engines.fleet import read_fleet_history

        topology = load_topology(self.topology_path)
        ids = folder_ids(self.migrations_path)
        reads = read_fleet_history(topology.shards, timeout=self.timeout, max_workers=self.max_workers)
        status = fleet_status(ids, topology.shards, reads)
        unreadable = [shard.id for shard in status.shards if not shard.readable]
        self.log.info(
            "%d shard(s) x %d migration(s); complete: %s; unreadable: %s",
            len(status.shards),
            len(status.migrations),
            status.complete,
            ", ".join(unreadable[:50]) or "none",
        )
        return status.to_xcom()
