"""Migration folders: loading, validation and checksums.

A migration is a folder whose name is its id -- the idempotency key recorded in every shard's history.
The checksum covers every script file (names included, LF line endings), so a script edited after it
ran somewhere is caught before it runs anywhere else.

What loading refuses, so that nothing reaches a shard half-understood: a folder name that is not a
valid id (it becomes DAG ids and history keys), ids that differ only by case (MySQL/MariaDB compare the
history key case-insensitively), scripts without a statement or above the size limit, and -- unless the
topology sets ``allow_symlinks: true`` -- symbolic links leading out of the migrations folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from airflow_provider_shardmigrate.core.errors import (
    InvalidScriptError,
    MigrationNotFoundError,
    Problem,
    raise_if_problems,
)
from airflow_provider_shardmigrate.core.options import MigrationOptions, parse_options
from airflow_provider_shardmigrate.core.sqltext import MAX_SCRIPT_BYTES, has_statement

SQL_VARIANTS = ("postgres", "mysql", "mssql", "sqlite")
MONGO_VARIANT = "mongo"
MSSQL_VARIANT = "mssql"
DIRECTIONS = ("up", "down")
OPTIONS_FILE = "migration.yaml"
#: Matched with ``fullmatch`` (a ``$`` would let a trailing newline through).
MIGRATION_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_SCRIPT_NAME = re.compile(r"(up|down)(?:\.([a-z0-9_]+))?\.(sql|json)")
#: Names that look like a script in any case (``UP.sql``, ``up.Postgres.sql``): rejected, never ignored.
_SCRIPT_LIKE = re.compile(r"(up|down)(?:\.[^.]+)?\.(sql|json)", re.IGNORECASE)


def script_file_name(direction: str, variant: str | None) -> str:
    if variant == MONGO_VARIANT:
        return f"{direction}.mongo.json"
    return f"{direction}.{variant}.sql" if variant else f"{direction}.sql"


def canonical_text(raw: bytes) -> str:
    """Decode and normalise line endings so a CRLF checkout and an LF checkout hash the same."""
    text = raw.decode("utf-8-sig")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def compute_checksum(scripts: Mapping[str, str]) -> str:
    """``sha256:<hex>`` over ``name NUL content NUL`` of every script, sorted by name."""
    digest = hashlib.sha256()
    for name in sorted(scripts):
        digest.update(name.encode("utf-8") + b"\0" + scripts[name].encode("utf-8") + b"\0")
    return f"sha256:{digest.hexdigest()}"


@dataclass(frozen=True)
class Migration:
    """One validated migration folder."""

    id: str
    path: Path
    scripts: Mapping[str, str] = field(repr=False)  # file name -> canonical text
    options: MigrationOptions
    checksum: str

    @property
    def description(self) -> str:
        return self.options.description

    def script_for(self, direction: str, variant: str) -> tuple[str, str] | None:
        """The script a shard of ``variant`` runs: its own variant file, else the generic one.

        MongoDB shards only ever run ``*.mongo.json``; SQL shards never do.
        """
        candidates = (
            [script_file_name(direction, MONGO_VARIANT)]
            if variant == MONGO_VARIANT
            else [script_file_name(direction, variant), script_file_name(direction, None)]
        )
        for name in candidates:
            if name in self.scripts:
                return name, self.scripts[name]
        return None

    def missing_for(self, variant: str) -> tuple[str, ...]:
        """The script files a shard of ``variant`` would need and this migration lacks (none: it can run there).

        A MongoDB shard needs ``up.mongo.json``/``down.mongo.json``; an SQL shard its variant or the generic
        ``up.sql``/``down.sql`` (the generic name is the one to add).
        """
        fallback = MONGO_VARIANT if variant == MONGO_VARIANT else None
        return tuple(
            script_file_name(direction, fallback)
            for direction in DIRECTIONS
            if self.script_for(direction, variant) is None
        )

    @property
    def runs_on_every_engine(self) -> bool:
        """Whether every engine has a script: the generic SQL pair and the MongoDB pair are both there."""
        return not self.missing_for("") and not self.missing_for(MONGO_VARIANT)

    @property
    def variants(self) -> tuple[str, ...]:
        """Engines this migration has a script for ("" = the generic ``up.sql``)."""
        found = []
        for name in self.scripts:
            match = _SCRIPT_NAME.fullmatch(name)
            if match and match.group(1) == "up":
                found.append(match.group(2) or "")
        return tuple(sorted(found))


def _classify(name: str) -> tuple[str, str | None] | None:
    """(direction, variant) for a recognised script name; None for a name that is not a script."""
    match = _SCRIPT_NAME.fullmatch(name)
    if not match:
        if _SCRIPT_LIKE.fullmatch(name):
            # ``UP.sql`` or ``up.Postgres.sql`` would otherwise be ignored silently and never run anywhere.
            hint = f"; rename it '{name.lower()}'" if _SCRIPT_NAME.fullmatch(name.lower()) else ""
            raise ValueError(
                f"'{name}' is not a valid script name: scripts are named up.sql / down.sql, up.<engine>.sql "
                f"({', '.join(SQL_VARIANTS)}) or up.mongo.json, in lower case{hint}"
            )
        return None
    direction, variant, ext = match.groups()
    if ext == "json" and variant != MONGO_VARIANT:
        raise ValueError(f"unknown script file '{name}': JSON scripts must be named up.mongo.json / down.mongo.json")
    if ext == "sql" and variant == MONGO_VARIANT:
        raise ValueError(f"'{name}': MongoDB scripts are JSON (up.mongo.json)")
    if ext == "sql" and variant is not None and variant not in SQL_VARIANTS:
        raise ValueError(
            f"unknown script variant '{variant}' in '{name}'; use one of: {', '.join(SQL_VARIANTS)} "
            f"(e.g. up.postgres.sql)"
        )
    return direction, variant


#: Database commands a MongoDB script may run, with the fields each one needs besides its collection name
#: (the value of the command's first key). The engine runs them against the shard's database, in order.
MONGO_COMMANDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "create": (),
        "drop": (),
        "collMod": (),
        "createIndexes": ("indexes",),
        "dropIndexes": ("index",),
        "renameCollection": ("to",),
        "insert": ("documents",),
        "update": ("updates",),
        "delete": ("deletes",),
        "findAndModify": (),
        "ping": (),  # the deliberate no-op (SQL scripts: SELECT 1)
    }
)
#: Commands refused by name, and why: each would reach past the shard's own collections.
_REFUSED_MONGO_COMMANDS = {
    "dropDatabase": "it would drop the shard's whole database, history included",
    "shutdown": "it stops the server",
    "applyOps": "it bypasses the per-command history",
}


def _mongo_command_problem(command: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """(message, field) of what is wrong with one command document, or None when it can run."""
    name = next(iter(command))
    if name in _REFUSED_MONGO_COMMANDS:
        return f"'{name}' is refused: {_REFUSED_MONGO_COMMANDS[name]}", name
    if name not in MONGO_COMMANDS:
        known = ", ".join(MONGO_COMMANDS)
        return f"unknown MongoDB command '{name}' (the first key names the command; accepted: {known})", name
    if name != "ping" and (not isinstance(command[name], str) or not command[name]):
        return f"'{name}' must name a collection of the shard's database (a non-empty string)", name
    if "$db" in command:
        return "'$db' is not allowed: every command runs against the shard's own database", "$db"
    missing = [field for field in MONGO_COMMANDS[name] if field not in command]
    if missing:
        return f"'{name}' needs {', '.join(repr(f) for f in missing)}", missing[0]
    return None


def _check_mongo_script(name: str, text: str, source: str) -> list[Problem]:
    try:
        commands: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        return [Problem(f"not valid JSON ({exc.msg} at line {exc.lineno})", source)]
    if isinstance(commands, dict):
        commands = [commands]
    if not isinstance(commands, list) or not commands or not all(isinstance(c, dict) and c for c in commands):
        return [Problem('must be a JSON list of MongoDB command documents, e.g. [{"create": "orders"}]', source)]
    problems = []
    for index, command in enumerate(commands):
        found = _mongo_command_problem(command)
        if found is not None:
            message, key = found
            problems.append(Problem(f"command {index + 1}: {message}", source, f"[{index}].{key}" if key else None))
    return problems


def _check_folder_name(folder: Path) -> list[Problem]:
    if MIGRATION_ID_PATTERN.fullmatch(folder.name):
        return []
    return [
        Problem(
            "the folder name is the migration id and may only hold letters, digits, '_', '.', '-' "
            "(starting with a letter or digit, at most 200 characters)",
            str(folder),
        )
    ]


def _outside(path: Path, root: Path | None) -> Problem | None:
    """A problem when ``path`` (through symbolic links) leads out of the migrations folder ``root``."""
    if root is None or path.resolve().is_relative_to(root):
        return None
    return Problem(
        f"is a symbolic link to '{path.resolve()}', outside the migrations folder '{root}'; move the file into "
        "the migrations folder, or set 'allow_symlinks: true' in the topology file to follow such links",
        str(path),
    )


def _check_text(file: Path, text: str, variant: str | None) -> list[Problem]:
    if not text.strip():
        return [Problem("script is empty", str(file))]
    if variant == MONGO_VARIANT:
        return _check_mongo_script(file.name, text, str(file))
    if variant == MSSQL_VARIANT:
        return _check_tsql(file, text)
    if not has_statement(text):
        return [
            Problem(
                "holds no SQL statement, only comments or whitespace (it would run nothing and be recorded as "
                "done); write the statements, or 'SELECT 1;' for a deliberate no-op",
                str(file),
            )
        ]
    return []


def _check_tsql(file: Path, text: str) -> list[Problem]:
    """A SQL Server variant is split as the SQL Server engine splits it (``GO`` batches, core/tsql.py)."""
    from airflow_provider_shardmigrate.core.tsql import has_tsql_statement

    try:
        if has_tsql_statement(text):
            return []
    except InvalidScriptError as exc:
        return [Problem(exc.message, str(file))]
    return [Problem("holds no SQL statement, only comments, whitespace or GO lines", str(file))]


def _read_script(file: Path, problems: list[Problem], root: Path | None) -> str | None:
    """The canonical text of one script file, or None (with a problem) when it cannot be used."""
    try:
        kind = _classify(file.name)
    except ValueError as exc:
        problems.append(Problem(str(exc), str(file)))
        return None
    if kind is None:
        return None
    escape = _outside(file, root)
    if escape is not None:
        problems.append(escape)
        return None
    size = file.stat().st_size
    if size > MAX_SCRIPT_BYTES:
        problems.append(
            Problem(f"is {size:,} bytes, above the limit of {MAX_SCRIPT_BYTES:,} bytes for a script", str(file))
        )
        return None
    try:
        text = canonical_text(file.read_bytes())
    except UnicodeDecodeError as exc:
        problems.append(Problem(f"is not UTF-8 text ({exc.reason} at byte {exc.start})", str(file)))
        return None
    found = _check_text(file, text, kind[1])
    problems.extend(found)
    return None if found and not text.strip() else text


def _read_scripts(folder: Path, problems: list[Problem], root: Path | None) -> dict[str, str]:
    scripts: dict[str, str] = {}
    for file in sorted(folder.iterdir()):
        if file.is_file():
            text = _read_script(file, problems, root)
            if text is not None:
                scripts[file.name] = text
    return scripts


def _check_pairs(folder: Path, scripts: Mapping[str, str]) -> list[Problem]:
    """up.sql (or up.mongo.json) is required, and every script needs its reverse twin.

    Existence is checked on disk, so a script already reported (empty, not UTF-8) is not reported
    missing as well.
    """
    problems: list[Problem] = []
    if not any((folder / name).is_file() for name in ("up.sql", "up.mongo.json")):
        problems.append(Problem("missing up.sql (required; MongoDB-only migrations use up.mongo.json)", str(folder)))
    for name in scripts:
        direction, variant = _classify(name) or ("", None)
        other = "down" if direction == "up" else "up"
        twin = script_file_name(other, variant)
        # an engine variant may pair with the generic script of the other direction (e.g. a generic
        # up.sql with a MySQL-specific down.mysql.sql), because that is what such a shard would run
        fallback = script_file_name(other, None) if variant not in (None, MONGO_VARIANT) else twin
        if not any((folder / candidate).exists() for candidate in (twin, fallback)):
            problems.append(
                Problem(f"'{name}' has no matching '{twin}' (up and down scripts come in pairs)", str(folder))
            )
    return problems


def _read_options(options_file: Path, problems: list[Problem], root: Path | None) -> MigrationOptions:
    if not options_file.exists():
        return MigrationOptions()
    escape = _outside(options_file, root)
    if escape is not None:
        problems.append(escape)
        return MigrationOptions()
    try:
        raw = yaml.safe_load(options_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.append(Problem(f"is not valid YAML: {exc}", str(options_file)))
        return MigrationOptions()
    options, option_problems = parse_options(raw, str(options_file))
    problems.extend(option_problems)
    return options


def load_migration(path: str | Path, *, confine_to: str | Path | None = None) -> Migration:
    """Load and validate one migration folder; raises :class:`InvalidScriptError` listing every problem.

    :param confine_to: The migrations folder: the migration folder and every file read from it must be
        inside it, symbolic links included (:func:`load_migrations` passes it unless ``allow_symlinks``).
        A task re-reading at run time the folder its DAG was built from passes nothing: the checksum
        taken at parse time is what guards it then.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise MigrationNotFoundError(f"migration folder '{folder}' does not exist")
    migration_id = folder.name
    root = Path(confine_to).resolve() if confine_to is not None else None
    escape = _outside(folder, root)
    if escape is not None:
        raise InvalidScriptError(escape.message, problems=[escape])
    problems = _check_folder_name(folder)
    scripts = _read_scripts(folder, problems, root)
    problems.extend(_check_pairs(folder, scripts))
    options_file = folder / OPTIONS_FILE
    options = _read_options(options_file, problems, root)

    checksum = compute_checksum(scripts)
    if options.checksum and options.checksum.lower() != checksum:
        problems.append(
            Problem(
                f"checksum mismatch: migration.yaml says {options.checksum}, the scripts hash to {checksum}",
                str(options_file),
                "checksum",
            )
        )
    raise_if_problems(problems, InvalidScriptError, f"migration '{migration_id}' is invalid")
    return Migration(
        id=migration_id, path=folder, scripts=MappingProxyType(scripts), options=options, checksum=checksum
    )


# -- order ------------------------------------------------------------------------------------------------


def folder_ids(root: str | Path) -> tuple[str, ...]:
    """The migrations of a folder in their order: every sub-folder whose name is a valid migration id, sorted
    by name -- whether or not it loads (a broken migration still comes before the ones after it)."""
    base = Path(root)
    names = (p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    return tuple(sorted(name for name in names if MIGRATION_ID_PATTERN.fullmatch(name)))


def order_problems(migration: Migration, ids: tuple[str, ...]) -> list[Problem]:
    """What is wrong with ``depends_on`` given the folder's ids: unknown ids, and ids that do not come first."""
    depends = migration.options.depends_on
    if not depends:
        return []
    source = str(migration.path / OPTIONS_FILE)
    known = set(ids)
    problems = []
    unknown = [item for item in depends if item not in known]
    if unknown:
        problems.append(
            Problem(
                f"names {', '.join(repr(item) for item in unknown)}, which is not a migration of this folder",
                source,
                "depends_on",
            )
        )
    later = [item for item in depends if item in known and item >= migration.id]
    if later:
        problems.append(
            Problem(
                f"names {', '.join(repr(item) for item in later)}, which does not come before '{migration.id}' "
                "(migrations run in the order of their ids; a migration can only depend on earlier ones)",
                source,
                "depends_on",
            )
        )
    return problems


def required_migrations(migration: Migration, ids: tuple[str, ...]) -> tuple[str, ...]:
    """The migrations a shard must hold (``applied`` or ``baselined``) before ``migration`` may run on it:
    its ``depends_on`` when given, else every earlier migration of the folder."""
    depends = migration.options.depends_on
    if depends is not None:
        return depends
    return tuple(item for item in ids if item < migration.id)


def sibling_requirements(migration: Migration) -> tuple[str, ...]:
    """:func:`required_migrations` of a migration loaded on its own, from the folder it lives in; raises
    :class:`InvalidScriptError` for a ``depends_on`` that folder refuses."""
    ids = folder_ids(migration.path.parent)
    raise_if_problems(order_problems(migration, ids), InvalidScriptError, f"migration '{migration.id}' is invalid")
    return required_migrations(migration, ids)


@dataclass(frozen=True)
class MigrationSet:
    """Every migration folder under a root: the valid ones, and the broken ones with their errors."""

    root: Path
    migrations: tuple[Migration, ...]
    broken: Mapping[str, InvalidScriptError | MigrationNotFoundError]
    #: Every migration id of the folder, valid or broken, in order (see :func:`folder_ids`).
    ids: tuple[str, ...] = ()

    def get(self, migration_id: str) -> Migration:
        for migration in self.migrations:
            if migration.id == migration_id:
                return migration
        if migration_id in self.broken:
            raise self.broken[migration_id]
        raise MigrationNotFoundError(f"no migration '{migration_id}' under '{self.root}'")

    def requires(self, migration: Migration) -> tuple[str, ...]:
        """The migrations a shard must hold before ``migration`` runs (:func:`required_migrations`)."""
        return required_migrations(migration, self.ids)


def _case_collisions(folders: list[Path]) -> dict[str, InvalidScriptError]:
    """Folders whose names differ only by case: MySQL/MariaDB compare history keys case-insensitively, so
    both migrations would share one history row (a misleading checksum mismatch, or a silent skip)."""
    by_key: dict[str, list[Path]] = {}
    for folder in folders:
        by_key.setdefault(folder.name.casefold(), []).append(folder)
    errors: dict[str, InvalidScriptError] = {}
    for group in (group for group in by_key.values() if len(group) > 1):
        names = ", ".join(f"'{folder.name}'" for folder in group)
        for folder in group:
            problem = Problem(
                f"migration ids {names} differ only by case; MySQL and MariaDB compare history keys "
                "case-insensitively, so they would share one history row -- rename all but one",
                str(folder),
            )
            errors[folder.name] = InvalidScriptError(problem.message, problems=[problem])
    return errors


def load_migrations(root: str | Path, *, allow_symlinks: bool = False) -> MigrationSet:
    """Load every migration folder under ``root``; one broken folder never hides the others.

    Migration ids that differ only by case are all broken (each names the others), as are folders and
    scripts whose symbolic links lead out of ``root`` unless ``allow_symlinks`` (the topology's
    ``allow_symlinks: true``).
    """
    base = Path(root)
    if not base.is_dir():
        raise MigrationNotFoundError(f"migrations folder '{base}' does not exist")
    folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    broken: dict[str, InvalidScriptError | MigrationNotFoundError] = dict(_case_collisions(folders))
    valid: list[Migration] = []
    for folder in (folder for folder in folders if folder.name not in broken):
        try:
            valid.append(load_migration(folder, confine_to=None if allow_symlinks else base))
        except (InvalidScriptError, MigrationNotFoundError) as exc:
            broken[folder.name] = exc
    ids = tuple(sorted(folder.name for folder in folders if MIGRATION_ID_PATTERN.fullmatch(folder.name)))
    valid = _check_order(valid, ids, broken)
    ordered = {name: broken[name] for name in sorted(broken)}
    return MigrationSet(root=base, migrations=tuple(valid), broken=MappingProxyType(ordered), ids=ids)


def _check_order(
    valid: list[Migration], ids: tuple[str, ...], broken: dict[str, InvalidScriptError | MigrationNotFoundError]
) -> list[Migration]:
    """The migrations whose ``depends_on`` the folder accepts; the others move to ``broken``."""
    kept = []
    for migration in valid:
        try:
            problems = order_problems(migration, ids)
            raise_if_problems(problems, InvalidScriptError, f"migration '{migration.id}' is invalid")
            kept.append(migration)
        except InvalidScriptError as exc:
            broken[migration.id] = exc
    return kept
