"""Which shards a rollback run's ``shards`` selection names (docs/contracts.md, Params).

The rollback DAG's ``shards`` Param is a pick-list of the topology's shard ids plus ``all``:

- ids match case-insensitively, like every shard id;
- an empty selection selects nothing -- the run is refused before any shard is touched, instead of
  rolling the whole fleet back because a box was left empty;
- ``all`` selects every active shard; an inactive shard is rolled back only when it is named;
- an id that is not in the topology refuses the run too (a typo must never be ignored).

Pure: no Airflow, no database.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from airflow_provider_shardmigrate.core.errors import InvalidParamsError

#: The selection keyword for every active shard.
ALL = "all"
#: The rollback DAG's Param that holds the selection.
SELECTION_PARAM = "shards"


def _folded(selection: Any) -> list[str]:
    if selection is None:
        return []
    if isinstance(selection, str) or not isinstance(selection, Sequence):
        raise InvalidParamsError(
            f"the '{SELECTION_PARAM}' param must be a list of shard ids (or [\"{ALL}\"]), got {selection!r}; "
            "nothing was rolled back"
        )
    return [str(item).strip().casefold() for item in selection if str(item).strip()]


def check_selection(selection: Any, shard_ids: Sequence[str]) -> list[str]:
    """The shard ids a selection names explicitly (as the topology spells them, in topology order; ``all`` is
    resolved per shard by :func:`selects`); raises :class:`InvalidParamsError` for an empty selection or an
    id that is not in the topology."""
    wanted = _folded(selection)
    if not wanted:
        raise InvalidParamsError(
            f"the '{SELECTION_PARAM}' param selects no shard, so nothing was rolled back; pick the shards to roll "
            f'back, or ["{ALL}"] for every active shard'
        )
    known = {shard_id.casefold() for shard_id in shard_ids}
    unknown = sorted({item for item in wanted if item != ALL and item not in known})
    if unknown:
        shown = ", ".join(repr(item) for item in unknown[:20])
        raise InvalidParamsError(
            f"the '{SELECTION_PARAM}' param names shard(s) that are not in the topology: {shown}; nothing was "
            f'rolled back (shard ids match case-insensitively; ["{ALL}"] selects every active shard)'
        )
    return [shard_id for shard_id in shard_ids if shard_id.casefold() in wanted]


def selects(selection: Any, shard_id: str, *, in_all: bool) -> bool:
    """Whether ``selection`` includes ``shard_id``; ``in_all``: whether ``all`` covers it (active shards)."""
    wanted: Collection[str] = set(_folded(selection))
    return shard_id.casefold() in wanted or (in_all and ALL in wanted)
