"""What the Airflow UI shows about a migration DAG before anyone triggers it: the display name and the
``doc_md`` of the docs pane -- the SQL each engine runs, the canary checks, the shards of every wave, and
links to the rollback DAG and the fleet page.

Built from the migration folder and the plan only (parse time: no database, no connection). Long scripts and
long waves are shortened so the pane stays readable at any fleet size; the full plan is the preflight's
``plan`` XCom of every run.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

from airflow_provider_shardmigrate.core.options import Strategy
from airflow_provider_shardmigrate.core.plans import RolloutPlan, WaveKind
from airflow_provider_shardmigrate.core.scripts import DIRECTIONS, Migration
from airflow_provider_shardmigrate.core.topology import Topology
from airflow_provider_shardmigrate.dags.layout import FLEET_VIEW_ROUTE, rollback_dag_id

#: A script shown in full up to this many lines / characters; longer ones are cut with a note.
MAX_SCRIPT_LINES = 40
MAX_SCRIPT_CHARS = 4000
#: Code lines are wrapped at this width: the UI's docs pane opens 500 px wide, where a code block holds about
#: 50 monospace characters; wider lines would push the pane's content out of view (checked in Chromium).
MAX_LINE = 48
#: A checksum is shown by its first characters (``shardmigrate validate`` prints it whole): a 71-character
#: token cannot wrap and would widen the pane.
CHECKSUM_SHOWN = 19
#: Waves listed, and shards named per wave.
MAX_WAVES = 100
MAX_SHARDS_PER_WAVE = 100
DISPLAY_NAME_LIMIT = 200


def display_name(migration: Migration, suffix: str = "") -> str:
    """``<migration id> · <description>`` (clipped), plus ``suffix`` (``rollback``)."""
    parts = [migration.id, *([suffix] if suffix else []), *([migration.description] if migration.description else [])]
    text = " · ".join(part.strip().replace("\n", " ") for part in parts)
    return text if len(text) <= DISPLAY_NAME_LIMIT else text[: DISPLAY_NAME_LIMIT - 1] + "…"


def ui_path(path: str) -> str:
    """``path`` under the Airflow UI's base path (``[api] base_url`` may put the UI below a prefix)."""
    from urllib.parse import urlparse

    from airflow.sdk import conf

    base = urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return f"{base}/{path.lstrip('/')}"


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _wrap(line: str) -> list[str]:
    """A long code line as several, broken at spaces where it can be, continuations indented."""
    if len(line) <= MAX_LINE:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    return textwrap.wrap(
        line,
        width=MAX_LINE,
        initial_indent="",
        subsequent_indent=indent + "    ",
        break_long_words=True,
        break_on_hyphens=False,
        drop_whitespace=True,
    ) or [line]


def shorten_script(text: str) -> str:
    """The script as shown: at most ``MAX_SCRIPT_LINES`` lines and ``MAX_SCRIPT_CHARS`` characters, long lines
    wrapped, and a last line saying how much was left out."""
    lines = text.strip().splitlines()
    kept: list[str] = []
    used = 0
    for line in lines:
        if len(kept) >= MAX_SCRIPT_LINES or used + len(line) > MAX_SCRIPT_CHARS:
            break
        kept.append(line)
        used += len(line) + 1
    shown = [part for line in kept for part in _wrap(line)]
    if len(kept) < len(lines):
        shown.append(f"-- ... {len(lines) - len(kept)} more line(s) in the migration folder")
    return "\n".join(shown)


def _script_blocks(migration: Migration, directions: tuple[str, ...] = DIRECTIONS) -> list[str]:
    """Every script of ``directions``, each engine variant apart, as fenced blocks."""
    lines: list[str] = []
    for direction in directions:
        for name in sorted(n for n in migration.scripts if n.startswith(f"{direction}.")):
            script = shorten_script(migration.scripts[name])
            fence = _fence(script)
            engine = f"{name.split('.')[1]} shards" if name.count(".") == 2 else "shards without their own variant"
            language = "json" if name.endswith(".json") else "sql"
            lines += ["", f"**`{name}`** ({engine})", "", f"{fence}{language}", script, fence]
    return lines


def _shard_list(ids: Sequence[str], total: int | None = None) -> str:
    """The first ``MAX_SHARDS_PER_WAVE`` of ``ids`` and how many more of ``total`` (default ``len(ids)``)."""
    total = len(ids) if total is None else total
    shown = ", ".join(f"`{shard_id}`" for shard_id in ids[:MAX_SHARDS_PER_WAVE])
    return shown + (f" and {total - MAX_SHARDS_PER_WAVE} more" if total > MAX_SHARDS_PER_WAVE else "")


def _wave_label(kind: WaveKind, index: int, concurrency: int) -> str:
    if kind is WaveKind.BATCH:
        return f"batch {index + 1}"
    if kind is WaveKind.CANARY:
        return "canary"
    if kind is WaveKind.REST:
        return f"rest of the fleet, {concurrency} at a time"
    if kind is WaveKind.SHARD:
        return f"step {index + 1}"
    return f"all, {concurrency} at a time"


def _plan_lines(plan: RolloutPlan) -> list[str]:
    lines = ["", f"**Plan**: {len(plan.targets)} shard(s) in {len(plan.waves)} wave(s)", ""]
    if plan.strategy is Strategy.SEQUENTIAL:  # only the first shards are named: no O(fleet) work per DAG
        ids = [wave.shards[0].id for wave in plan.waves[: MAX_SHARDS_PER_WAVE + 1]]
        return [*lines, f"* one at a time, in this order: {_shard_list(ids, len(plan.waves))}"]
    for wave in plan.waves[:MAX_WAVES]:
        ids = [shard.id for shard in wave.shards[: MAX_SHARDS_PER_WAVE + 1]]
        label = _wave_label(wave.kind, wave.index, wave.concurrency)
        lines.append(f"* {label} ({len(wave.shards)}): {_shard_list(ids, len(wave.shards))}")
    if len(plan.waves) > MAX_WAVES:
        lines.append(f"* ... {len(plan.waves) - MAX_WAVES} more wave(s): see the preflight's `plan` XCom of a run")
    return lines


def _canary_lines(migration: Migration, plan: RolloutPlan) -> list[str]:
    options = migration.options
    if plan.canary is None:
        return []
    lines = ["", f"**Canary** `{plan.canary.id}`: the rest of the fleet starts only after it applied cleanly"]
    if options.canary_validation:
        query = shorten_script(options.canary_validation)
        fence = _fence(query)
        lines += ["and this validation query returned a truthy first column:", "", f"{fence}sql", query, fence]
    if options.canary_bake_time:
        lines.append(f"* bake time: {options.canary_bake_time:g} s after the validation")
    if options.canary_approval:
        lines.append(
            f"* a human approves it (task `shards.canary_approval`, answered under *Required actions*); reject or "
            f"no answer within {options.canary_approval_timeout:g} s leaves every other shard `pending`"
        )
    else:
        lines.append("* a failed canary (or validation) leaves every other shard `pending`")
    return lines


def _needs(required: Sequence[str]) -> str:
    """The doc line naming what a shard must hold first."""
    if not required:
        return "nothing (no earlier migration, or `depends_on: []`)"
    shown = ", ".join(f"`{mid}`" for mid in required[-10:])
    return (f"{len(required) - 10} earlier migration(s) and " if len(required) > 10 else "") + shown


def migration_doc(migration: Migration, plan: RolloutPlan, required: Sequence[str] = ()) -> str:
    """The rollout DAG's ``doc_md``."""
    options = migration.options
    lines = [f"### Migration `{migration.id}`"]
    if migration.description:
        lines += ["", migration.description]
    lines += [
        "",
        f"* strategy **{plan.strategy.value}**, max_parallelism {plan.max_parallelism}, per-shard timeout "
        f"{options.per_shard_timeout:g} s, transactional {str(options.transactional).lower()}",
        f"* defaults: stop_on_first_failure {str(options.stop_on_first_failure).lower()}, auto_rollback "
        f"{str(options.auto_rollback).lower()}, preflight drift check {str(options.validate_before_apply).lower()}",
        f"* checksum `{migration.checksum[:CHECKSUM_SHOWN]}…` (`shardmigrate validate` prints it in full)",
        f"* needs first: {_needs(required)}",
        f"* [rollback DAG]({ui_path('dags/' + rollback_dag_id(migration.id))}) · "
        f"[fleet page]({ui_path('plugin/' + FLEET_VIEW_ROUTE)})",
    ]
    lines += _canary_lines(migration, plan)
    lines += _plan_lines(plan)
    lines += ["", "**Scripts** (a shard runs its engine's variant when there is one)"]
    lines += _script_blocks(migration)
    return "\n".join(lines)


def rollback_doc(migration: Migration, topology: Topology, migration_dag_id: str) -> str:
    """The rollback DAG's ``doc_md``."""
    inactive = [shard.id for shard in topology.shards if not shard.active]
    lines = [
        f"### Rollback of `{migration.id}`",
        "",
        "Runs `down` on each **selected** shard whose history row is `applied` or `baselined`, and marks it "
        "`rolled_back`. Pick shards in the `shards` field, or `all` for every active shard; an empty selection "
        "rolls back nothing (the run is refused and says so). Shards without the migration report `not_applied`; "
        "shards left out report `not_selected`.",
        "",
        f"* {len(topology.shards)} shard(s), {len(inactive)} inactive"
        + (f" (rolled back only when picked: {_shard_list(inactive)})" if inactive else ""),
        f"* [rollout DAG]({ui_path('dags/' + migration_dag_id)}) · "
        f"[fleet page]({ui_path('plugin/' + FLEET_VIEW_ROUTE)})",
        "",
        "**Down scripts** (a shard runs its engine's variant when there is one)",
    ]
    lines += _script_blocks(migration, ("down",))
    return "\n".join(lines)
