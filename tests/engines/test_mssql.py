"""The SQL Server engine, checked without a SQL Server (none can run on the development machine).

What runs here, for real: the statements the engine sends -- captured by driving the engine through the whole
protocol over a recording DB-API connection, plus every SQL constant of the module -- each parsed as T-SQL by
sqlglot; the mapping of SQL Server and db-lib error numbers, on pymssql's own exception classes; the
application-lock return codes; the process-wide query timeout; and connecting with the real pymssql/FreeTDS to a
refused port and to a server that never answers. The recording connection only captures text: nothing here
claims the server would accept it beyond the parse. The behaviour against a live server is the contract suite
(tests/engines/test_contract.py, ``mssql`` parameter), run when ``SHARDMIGRATE_TEST_MSSQL_URL`` is set.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shardmigrate.core.deadline import Deadline
from airflow_provider_shardmigrate.core.errors import (
    InvalidScriptError,
    LockTimeoutError,
    MigrationFailedError,
    MigrationTimeoutError,
    SchemaComparisonFailedError,
)
from airflow_provider_shardmigrate.core.history import HistoryRecord, HistoryStatus
from airflow_provider_shardmigrate.core.scripts import load_migration
from airflow_provider_shardmigrate.core.topology import DriftDepth, Shard
from airflow_provider_shardmigrate.engines import engine_class, engine_for, introspect_mssql, mssql
from airflow_provider_shardmigrate.engines.mssql import MsSqlEngine
from airflow_provider_shardmigrate.engines.runner import apply_to_shard, rollback_shard
from tests.engines.conftest import MsSqlShard, SilentServer, worker_env
from tests.server_fixtures import REPO, conn_id_for, topology_yaml

PASSWORD = "S3cret-pw-never-shown"
WriteMigration = Callable[..., Path]


# -- a connection that records what the engine sends -------------------------------------------------------


class Recorder:
    """A DB-API connection standing in for pymssql's: records every batch (parameters substituted by pymssql's
    own quoting) and answers the engine's own queries with rows shaped like SQL Server's."""

    def __init__(self, answers: dict[str, list[tuple[Any, ...]]] | None = None) -> None:
        self.sent: list[str] = []
        self.answers = answers or {}
        self.timeouts: list[int] = []
        recorder = self

        class _Driver:
            @property
            def query_timeout(self) -> int:
                return recorder.timeouts[-1] if recorder.timeouts else 0

            @query_timeout.setter
            def query_timeout(self, value: int) -> None:
                recorder.timeouts.append(value)

        self._conn = _Driver()

    def cursor(self, as_dict: bool = False) -> RecordingCursor:
        return RecordingCursor(self)

    def close(self) -> None:
        pass

    def answer(self, text: str) -> list[tuple[Any, ...]]:
        for needle, rows in self.answers.items():
            if needle in text:
                return rows
        if "@@SPID" in text:
            return [(53, "shard_db", "dbo", "16.0.4135.4", datetime(2026, 1, 2, 3, 4, 5), 1)]
        if "sp_getapplock" in text:
            return [(0,)]
        if "OBJECT_ID(" in text and text.startswith("SELECT CASE"):
            return [(0,)]
        if "sys.dm_exec_sessions WHERE session_id" in text:
            return [(0,)]
        return []


class RecordingCursor:
    def __init__(self, conn: Recorder) -> None:
        self.conn = conn
        self.description: Any = None
        self.rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: Any = None) -> None:
        from pymssql._mssql import substitute_params

        text = sql if params is None else substitute_params(sql, params).decode()
        self.conn.sent.append(text)
        self.rows = self.conn.answer(text)
        self.description = [("c", None)] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self.rows)

    def nextset(self) -> bool:
        return False

    def close(self) -> None:
        pass


class RecordingEngine(MsSqlEngine):
    """The engine over a :class:`Recorder` (``_connect`` is the only part replaced)."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__("ms_rec", "ms-rec")
        self.recorder = recorder
        self._secret = PASSWORD
        self.address, self.database = "db.example:1433", "shard_db"

    def _connect(self, deadline: Deadline) -> Any:
        return self.recorder

    def _driver_connection(self, deadline: Deadline) -> Any:
        return self.recorder


def _record(answers: dict[str, list[tuple[Any, ...]]] | None = None) -> tuple[RecordingEngine, Recorder]:
    """An engine over a recorder; ``answers``: rows for batches containing a key."""
    recorder = Recorder(answers)
    return RecordingEngine(recorder), recorder


def _history_record() -> HistoryRecord:
    return HistoryRecord(
        migration_id="001_o'rders",
        checksum="sha256:abc",
        status=HistoryStatus.APPLIED,
        description="it's a test",
        statements_applied=3,
        statements_total=3,
        applied_at=datetime(2026, 2, 16, 12, 30, tzinfo=UTC),
        duration_ms=12,
        dag_id="shardmigrate__x",
        run_id="manual__1",
    )


def _drive_the_whole_protocol() -> list[str]:
    """Everything the engine sends in apply (both modes), rollback, history reads, read-only and drift --
    the migration's own steps left out (they are the script's, not the engine's)."""
    engine, recorder = _record()
    steps = engine.split(MsSqlShard.rich_up)
    with engine.connected(Deadline(30)):
        engine.ensure_history_table()
        with engine.migration_lock(Deadline(30)):
            engine.read_history("001_orders")
            engine.save_history(_history_record())
            engine.run_in_transaction(steps, _history_record(), Deadline(30))
            for step in steps:
                engine.run_step(step, Deadline(30))
            engine.query_scalar("SELECT COUNT(*) FROM customers", Deadline(30))
            engine.list_history()
        engine._revive()  # what follows a client-side timeout
    reader, read_recorder = _record()
    with reader.connected(Deadline(30), read_only=True):
        reader.list_history()
    introspect_mssql.introspect(read_recorder, DriftDepth.FULL)
    return [text for text in recorder.sent + read_recorder.sent if text not in steps]


def _parse_tsql(text: str) -> list[Any]:
    import sqlglot
    from sqlglot import exp

    statements = sqlglot.parse(text, read="tsql")
    for statement in statements:
        assert statement is not None, text
        unparsed = list(statement.find_all(exp.Command))
        assert not unparsed, f"sqlglot could only keep {unparsed[0].sql()!r} as an unparsed command: {text}"
    return statements


# -- the SQL the engine sends ------------------------------------------------------------------------------


def test_every_statement_the_engine_sends_parses_as_tsql() -> None:
    sent = _drive_the_whole_protocol()
    templates = {name: text.replace("%s", "N'sample'") for name, text in mssql.sent_statements().items()}
    templates.update(
        {
            f"introspection {name}": sql.replace("%s", "N'shardmigrate_history'")
            for name, sql in [
                ("TABLES", introspect_mssql.TABLES),
                ("COLUMNS", introspect_mssql.COLUMNS),
                ("INDEXES", introspect_mssql.INDEXES),
                ("CONSTRAINTS", introspect_mssql.CONSTRAINTS),
            ]
        }
    )
    failures = []
    for label, text in [*[(f"sent #{i}", t) for i, t in enumerate(sent)], *templates.items()]:
        try:
            _parse_tsql(text)
        except Exception as exc:  # collect them all, then fail naming each
            failures.append(f"{label}: {type(exc).__name__}: {exc}\n    {text[:300]}")
    assert not failures, "\n".join(failures)
    # The drive really went through the protocol: lock, transaction, history upsert, release, catalog.
    joined = "\n".join(sent)
    for needle in (
        "sp_getapplock",
        "BEGIN TRANSACTION",
        "MERGE shardmigrate_history",
        "COMMIT TRANSACTION",
        "sp_releaseapplock",
        "SET XACT_ABORT ON",
        "sys.key_constraints",
        "IF @@TRANCOUNT <> 1",
    ):
        assert needle in joined, needle


def test_every_sql_constant_of_the_module_is_parsed() -> None:
    sql_start = re.compile(r"\s*(SELECT|SET|IF|BEGIN|COMMIT|EXEC|DECLARE|MERGE|KILL|CREATE)\b", re.IGNORECASE)
    constants = {name for name, value in vars(mssql).items() if name.isupper() and isinstance(value, str)}
    sql_constants = {name for name in constants if sql_start.match(getattr(mssql, name))}
    assert sql_constants <= set(mssql.sent_statements()), sql_constants - set(mssql.sent_statements())
    assert {"GET_LOCK", "UPSERT", "CREATE_HISTORY", "SESSION_SETUP", "ARM_STEP"} <= sql_constants


def test_the_parse_check_fails_on_broken_tsql() -> None:
    from sqlglot.errors import ParseError

    with pytest.raises(ParseError):
        _parse_tsql("SELECT 1 +")
    with pytest.raises(ParseError):
        _parse_tsql("MERGE t USING (SELECT 1 AS a) AS s ON WHEN MATCHED")
    with pytest.raises(AssertionError, match="unparsed command"):  # what sqlglot does not understand fails too
        _parse_tsql("CREATE TRIGGER t ON x AFTER INSERT AS BEGIN SET NOCOUNT ON; END")


def test_history_values_are_quoted_and_stored_in_utc() -> None:
    engine, recorder = _record()
    with engine.connected(Deadline(30)):
        engine.save_history(_history_record())
    upsert = next(text for text in recorder.sent if "MERGE" in text)
    assert "N'001_o''rders' AS migration_id" in upsert and "N'it''s a test' AS description" in upsert
    assert "'2026-02-16 12:30:00.000' AS applied_at" in upsert  # UTC, zone dropped (datetime2)
    assert upsert.startswith("SET LOCK_TIMEOUT 30000; MERGE shardmigrate_history WITH (HOLDLOCK)")


def test_session_setup_is_one_round_trip_and_steps_are_armed_from_the_budget() -> None:
    engine, recorder = _record()
    with engine.connected(Deadline(30)):
        engine.run_step("CREATE TABLE t (id int);", Deadline(5))
    assert recorder.sent[0].startswith("SET XACT_ABORT ON; SET NOCOUNT ON; SET LOCK_TIMEOUT 30000; SELECT @@SPID")
    arm = recorder.sent[1]
    assert re.fullmatch(r"SET LOCK_TIMEOUT (\d+)", arm) and 4000 < int(arm.split()[-1]) <= 5000
    assert recorder.sent[2] == "CREATE TABLE t (id int);"
    assert recorder.timeouts and recorder.timeouts[-1] >= 5  # the driver's bound covers the step's budget


# -- errors ----------------------------------------------------------------------------------------------


def _pymssql_error(number: int, message: str) -> Exception:
    """An error exactly as pymssql raises it: ``args[0]`` is ``(number, message bytes)``."""
    import pymssql

    noise = "DB-Lib error message 20018, severity 16:\nGeneral SQL Server error: Check messages from the SQL Server\n"
    text = f"{message}{noise}"
    return pymssql.exceptions.OperationalError((number, text.encode()))


@pytest.mark.parametrize(
    ("number", "message", "lock", "expected", "needles"),
    [
        (1222, "Lock request time out period exceeded.", False, MigrationTimeoutError, ["1222", "the server stopped"]),
        (1222, "Lock request time out period exceeded.", True, LockTimeoutError, ["another migration holds the lock"]),
        (208, "Invalid object name 'no_such_table'.", False, MigrationFailedError, ["(208)", "no_such_table"]),
        (
            2714,
            "There is already an object named 'in_the_way' in the database.",
            False,
            MigrationFailedError,
            ["(2714)"],
        ),
        (1205, "Transaction (Process ID 53) was deadlocked on lock resources", False, MigrationFailedError, ["(1205)"]),
        (
            50000,
            f"{mssql._TRANSACTION_GONE}",
            False,
            MigrationFailedError,
            ["ended the engine's transaction", "transactional: false"],
        ),
    ],
)
def test_error_numbers_map_to_our_codes(
    number: int, message: str, lock: bool, expected: type[Exception], needles: list[str]
) -> None:
    engine, _ = _record()
    with engine.connected(Deadline(30)), pytest.raises(expected) as caught:
        engine._raise_mapped(_pymssql_error(number, message), Deadline(2), "running statement 1 of 1", lock=lock)
    text = str(caught.value)
    for needle in needles:
        assert needle in text, (needle, text)
    assert "DB-Lib error message 20018" not in text and "General SQL Server error" not in text
    assert not engine._broken  # a server error leaves the session usable


def test_a_client_side_timeout_is_a_timeout_and_the_engine_checks_the_old_session_is_gone() -> None:
    import pymssql

    engine, recorder = _record()
    timeout = pymssql.exceptions.OperationalError(
        (20003, b"DB-Lib error message 20003, severity 6:\nAdaptive Server connection timed out (db.example)\n")
    )
    with engine.connected(Deadline(30)), pytest.raises(MigrationTimeoutError) as caught:
        engine._raise_mapped(timeout, Deadline(2), "running statement 2 of 3 (WAITFOR DELAY '00:00:30')", lock=False)
    message = caught.value.message
    assert "20003" in message and "the driver's query timeout" in message and "the server ended session 53" in message
    assert any("FROM sys.dm_exec_sessions WHERE session_id = 53" in text for text in recorder.sent)
    assert not engine._broken  # a new session replaced the one the driver closed


def test_without_view_server_state_the_timeout_message_says_the_old_session_is_left_to_the_server() -> None:
    import pymssql

    session = [(53, "shard_db", "dbo", "16.0.4135.4", datetime(2026, 1, 2, 3, 4, 5), 0)]
    engine, recorder = _record({"@@SPID": session})
    timeout = pymssql.exceptions.OperationalError((20003, b"DB-Lib error message 20003: timed out"))
    with engine.connected(Deadline(30)), pytest.raises(MigrationTimeoutError, match="lacks VIEW SERVER STATE"):
        engine._raise_mapped(timeout, Deadline(2), "running statement 1 of 1", lock=False)
    assert not any("session_id = 53 AND" in text for text in recorder.sent)  # it cannot see, so it does not claim


def test_a_lost_connection_and_a_bookkeeping_timeout_are_failures() -> None:
    import pymssql

    engine, _ = _record()
    gone = pymssql.exceptions.OperationalError((20047, b"DBPROCESS is dead or not enabled"))
    with engine.connected(Deadline(30)):
        with pytest.raises(MigrationFailedError, match=r"lost the connection to SQL Server at db\.example:1433"):
            engine._raise_mapped(gone, None, "writing the history row", lock=False)
        engine._broken = False
        with pytest.raises(MigrationFailedError, match=r"\(1222\)"):  # no deadline: our own bookkeeping bound
            engine._raise_mapped(_pymssql_error(1222, "Lock request time out."), None, "reading", lock=False)


def test_error_text_drops_db_lib_repeats_and_the_password() -> None:
    engine, _ = _record()
    exc = _pymssql_error(18456, f"Login failed for user 'sa' with password {PASSWORD}.")
    assert engine._describe(exc) == "Login failed for user 'sa' with password ***."
    assert mssql.error_number(exc) == 18456


@pytest.mark.parametrize(
    ("code", "expected", "needle"),
    [
        (-1, LockTimeoutError, "another migration holds the lock 'shardmigrate:dbo' in database 'shard_db'"),
        (-2, MigrationFailedError, "was cancelled (code -2)"),
        (-3, MigrationFailedError, "deadlock victim (code -3)"),
        (-999, MigrationFailedError, "was refused"),
    ],
)
def test_applock_return_codes(code: int, expected: type[Exception], needle: str) -> None:
    engine, _ = _record({"sp_getapplock": [(code,)]})
    with (
        engine.connected(Deadline(30)),
        pytest.raises(expected, match=re.escape(needle)),
        engine.migration_lock(Deadline(1)),
    ):
        pass


def test_the_lock_is_released_in_every_path() -> None:
    engine, recorder = _record()
    with engine.connected(Deadline(30)), pytest.raises(RuntimeError), engine.migration_lock(Deadline(5)):
        raise RuntimeError("the work failed")
    get = next(i for i, text in enumerate(recorder.sent) if "sp_getapplock" in text)
    release = next(i for i, text in enumerate(recorder.sent) if "sp_releaseapplock" in text)
    assert get < release
    assert "@LockOwner = 'Session'" in recorder.sent[get] and "@Resource = N'shardmigrate:dbo'" in recorder.sent[get]
    assert re.search(r"@LockTimeout = (\d+)", recorder.sent[get])


def test_transaction_control_in_a_transactional_script_is_refused() -> None:
    engine, recorder = _record()
    with engine.connected(Deadline(30)), pytest.raises(InvalidScriptError, match=r"statement 2 .*COMMIT"):
        engine.run_in_transaction(["CREATE TABLE a (id int);", "COMMIT;"], _history_record(), Deadline(30))
    assert not any("CREATE TABLE a" in text for text in recorder.sent)  # refused before anything ran


def test_read_only_sessions_refuse_anything_but_queries() -> None:
    engine, recorder = _record()
    with engine.connected(Deadline(30), read_only=True):
        assert mssql.QUERY_TIMEOUT.seconds_for(time.monotonic()) >= 29  # the session's bound covers drift's reads
        assert engine.list_history() == []
        with pytest.raises(MigrationFailedError, match="read-only session"):
            engine._execute("CREATE TABLE nope (id INT)")
    assert mssql.READ_ONLY_SETUP in recorder.sent and not any("nope" in text for text in recorder.sent)


def test_the_process_wide_query_timeout_is_the_longest_remaining_budget() -> None:
    timeouts = mssql._ProcessQueryTimeout()
    recorder = Recorder()
    with timeouts.bound(recorder, 30):
        assert recorder.timeouts == [30]
        with timeouts.bound(recorder, 2):  # a shorter statement never cuts the longer one short
            assert recorder.timeouts == [30, 30]
    with timeouts.bound(recorder, 2.2):
        assert recorder.timeouts == [30, 30, 3]  # alone again: its own budget, rounded up to whole seconds
    assert timeouts.seconds_for(0.0) == 1  # nothing running: the smallest valid setting


# -- connecting, with the real driver ------------------------------------------------------------------------


@pytest.fixture
def mssql_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Shard]:
    def define(shard_id: str, port: int, **extra: Any) -> Shard:
        spec: dict[str, Any] = {
            "conn_type": "mssql",
            "host": "127.0.0.1",
            "port": port,
            "login": "sa",
            "password": PASSWORD,
            "schema": "shard_db",
        }
        if extra:
            spec["extra"] = extra
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id_for(shard_id).upper()}", json.dumps(spec))
        return Shard(shard_id, conn_id_for(shard_id))

    return define


def test_registered_with_its_introspector() -> None:
    assert engine_class("mssql") is MsSqlEngine
    assert (MsSqlEngine.variant, MsSqlEngine.transactional_ddl) == ("mssql", True)


def test_a_refused_connection_fails_at_once_naming_the_shard(
    mssql_conn: Callable[..., Shard], write_migration: WriteMigration
) -> None:
    shard = mssql_conn("ms-down", 1)
    migration = load_migration(write_migration("001_orders", up=MsSqlShard.rich_up, down=MsSqlShard.rich_down))

    status = apply_to_shard(shard, migration)

    assert status.outcome == "failed" and status.error_code == "shardmigrate.migration_failed", status
    message = status.error_message or ""
    for needle in ("127.0.0.1:1", "shard_db", "ms_down", "SQL Server", "Connection refused"):
        assert needle in message, (needle, message)
    assert PASSWORD not in json.dumps(status.to_xcom())


@pytest.mark.timeout(120)
def test_a_server_that_never_answers_is_a_timeout_everywhere(
    mssql_conn: Callable[..., Shard],
    silent_server: SilentServer,
    write_migration: WriteMigration,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """pymssql/FreeTDS against a listener that accepts and never answers: the login is inside the budget."""
    hung = mssql_conn("ms-hung", silent_server.port)
    migration = load_migration(write_migration("001_orders", up=MsSqlShard.rich_up, options={"per_shard_timeout": 1}))

    status = apply_to_shard(hung, migration)

    assert status.outcome == "failed" and status.error_code == "shardmigrate.migration_timeout", status
    assert f"127.0.0.1:{silent_server.port}" in (status.error_message or "") and "ms_hung" in (
        status.error_message or ""
    )
    assert PASSWORD not in json.dumps(status.to_xcom())
    assert silent_server.connections >= 1
    assert rollback_shard(hung, migration).error_code == "shardmigrate.migration_timeout"

    from airflow_provider_shardmigrate.cli import main
    from airflow_provider_shardmigrate.engines.introspect import introspect_shard

    (tmp_path / "shards.yaml").write_text(topology_yaml([hung.id]))
    assert main(["history", "--topology", str(tmp_path / "shards.yaml"), "--timeout", "1", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert "shardmigrate.migration_timeout" in report[hung.id]["error"] and PASSWORD not in report[hung.id]["error"]
    with pytest.raises(SchemaComparisonFailedError, match="timed out"):
        introspect_shard(hung, DriftDepth.TABLES_ONLY, timeout=1)
    with pytest.raises(MigrationTimeoutError, match=hung.id), engine_for(hung).connected(Deadline(1)):
        pass


@pytest.mark.timeout(120)
def test_the_connection_may_ask_for_a_shorter_login_timeout(
    mssql_conn: Callable[..., Shard], silent_server: SilentServer
) -> None:
    hung = mssql_conn("ms-hung", silent_server.port, login_timeout=1)
    with pytest.raises(MigrationTimeoutError, match="did not answer in time"), engine_for(hung).connected(Deadline(60)):
        pass


@pytest.mark.slow
def test_missing_extra_names_the_extra(
    mssql_conn: Callable[..., Shard], write_migration: WriteMigration, tmp_path: Path
) -> None:
    from tests.engines.test_contract import _BLOCKED_IMPORTS

    shard = mssql_conn("ms-0", 1)
    script = tmp_path / "blocked_imports.py"
    script.write_text(_BLOCKED_IMPORTS)
    folder = write_migration("001_orders", up=MsSqlShard.rich_up, down=MsSqlShard.rich_down)
    hint = "pip install 'airflow-provider-shardmigrate[mssql]'"
    for blocked in MsSqlShard.missing_extra_blocks:
        done = subprocess.run(
            [sys.executable, str(script), ",".join(blocked), shard.id, shard.conn_id, str(folder)],
            cwd=REPO,
            env=worker_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (blocked, done.stderr[-3000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert hint in (result["raised"] or "") and "SQL Server shards need the [mssql] extra" in result["raised"]
        assert result["status"]["error_code"] == "shardmigrate.invalid_topology"


def test_port_defaults_to_1433_and_tds_version_is_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the engine hands MsSqlHook: the hook would pass the text 'None' for a missing port."""
    captured: dict[str, Any] = {}
    import pymssql

    def fake_connect(**kwargs: Any) -> Any:
        captured.update(kwargs)
        raise pymssql.exceptions.OperationalError((20009, b"Unable to connect: refused"))

    monkeypatch.setenv("AIRFLOW_CONN_MS_PORTLESS", json.dumps({"conn_type": "mssql", "host": "db", "schema": "s"}))
    monkeypatch.setattr(pymssql, "connect", fake_connect)
    with pytest.raises(MigrationFailedError, match="db:1433"):
        MsSqlEngine("ms_portless", "ms-portless").open(Deadline(5))
    assert captured["port"] == "1433" and captured["tds_version"] == "7.4" and captured["autocommit"] is True
    assert 1 <= captured["login_timeout"] <= 5 and captured["appname"] == "shardmigrate:ms-portless"
