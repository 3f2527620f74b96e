"""``make airflow``'s entry point (``shardmigrate airflow``) as a user runs it: a real subprocess that starts a
real Airflow 3.3 over the demo fleet, once with the LocalExecutor (the default) and once with
``--executor celery`` (a Celery worker on the local Redis).

For each: it becomes ready (the URL printed once the api-server reports every component healthy and the
migration DAGs are parsed), a second start in the same folder exits non-zero naming the running one, a second
start elsewhere on the same port says the port is taken; rollouts triggered through the REST API end as the
README's walk-through says -- the unique-email migration fails on the legacy shard and auto-rollback undoes the
others; without auto-rollback, fixing the shard's data and clearing its task makes the run succeed -- and each
shard's history table agrees; a migration folder added while it runs becomes a DAG; the password appears in no
log; SIGTERM stops every process it started (checked by pid and start time, by process group and by
AIRFLOW_HOME in /proc/*/environ), frees the port and releases the working folder.

Waits are on states, with generous deadlines; the times printed are measured, never asserted.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_shardmigrate.cli.demo_fleet import (
    FAILING_MIGRATION,
    GOOD_MIGRATION,
    LEGACY_FIX_SQL,
    LEGACY_SHARD,
)
from airflow_provider_shardmigrate.local import services
from airflow_provider_shardmigrate.local.api import AirflowApi, get_token
from airflow_provider_shardmigrate.local.instance import INSTANCE_FILE, LOCK_FILE, metadata_db_name
from airflow_provider_shardmigrate.local.processes import (
    free_port,
    group_members,
    port_is_free,
    process_tree,
    snapshot,
    start_times,
    still_alive,
    tail,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
OUTPUT_ROOT = REPO / "test-output" / "local-airflow"
READY_TIMEOUT = 600.0
RUN_TIMEOUT = 300.0
SHARDS = [f"shard-{i}" for i in range(6)]
#: A migration added while the instance runs; its statement keeps SQLite busy for a while, so a shard task is
#: still running when the instance is stopped.
SLOW_MIGRATION = "20260310_slow_summary"
SLOW_UP = (
    "CREATE TABLE order_summary AS WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n "
    "WHERE x < 300000000) SELECT COUNT(*) AS total FROM n;\n"
)


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "airflow_provider_shardmigrate.cli", "airflow", *args]


def _environment() -> dict[str, str]:
    """The test session's environment without its Airflow settings (the command builds its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.setdefault("PYTHONPYCACHEPREFIX", str(REPO / ".cache" / "pycache"))
    return env


def wait_for(what: str, probe: Callable[[], Any], timeout: float, alive: Callable[[], None] | None = None) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.5)


@dataclass
class Instance:
    executor: str
    workdir: Path
    port: int
    proc: subprocess.Popen[bytes]
    output: Path
    started: float
    ready_s: float = 0.0
    api: AirflowApi | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def home(self) -> Path:
        return self.workdir / "airflow-home"

    def password(self) -> str:
        return str(json.loads((self.home / "simple_auth_manager_passwords.json").read_text())["admin"])

    def printed(self) -> str:
        return self.output.read_text(errors="replace")

    def alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"shardmigrate airflow exited with {code}:\n{tail(self.output, 60)}")

    def rest(self) -> AirflowApi:
        assert self.api is not None
        return self.api

    def shard(self, shard_id: str) -> Path:
        return self.workdir / "shards" / f"{shard_id}.db"

    def history(self, migration_id: str) -> dict[str, str]:
        statuses = {}
        for shard_id in SHARDS:
            conn = sqlite3.connect(self.shard(shard_id))
            try:
                row = conn.execute(
                    "SELECT status FROM shardmigrate_history WHERE migration_id = ?", (migration_id,)
                ).fetchone()
            finally:
                conn.close()
            statuses[shard_id] = row[0] if row else "-"
        return statuses

    def run(self, dag_id: str, conf: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        api = self.rest()
        run_id = api.trigger(dag_id, conf)["dag_run_id"]
        run = api.wait_run(dag_id, run_id, timeout=RUN_TIMEOUT, alive=self.alive)
        return run_id, run

    def report(self, dag_id: str, run_id: str) -> dict[str, str]:
        report = self.rest().xcom(dag_id, run_id, "report")
        return {shard_id: status["outcome"] for shard_id, status in report["shards"].items()}


def _start(executor: str) -> Instance:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root = OUTPUT_ROOT / f"{stamp}-{os.getpid()}-{executor}"
    root.mkdir(parents=True)
    workdir, port, output = root / "shardmigrate-airflow", free_port(), root / "output.txt"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            _command("--workdir", str(workdir), "--port", str(port), "--executor", executor),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_environment(),
            cwd=REPO,
            start_new_session=True,
        )
    return Instance(executor, workdir, port, proc, output, time.monotonic())


def _stop(instance: Instance) -> None:
    if instance.proc.poll() is None:
        instance.proc.send_signal(signal.SIGTERM)
        try:
            instance.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(instance.proc.pid, signal.SIGKILL)
            instance.proc.wait(timeout=30)
    services.drop_database(metadata_db_name(instance.workdir))


@pytest.fixture(scope="module", params=["local", "celery"])
def instance(request: pytest.FixtureRequest, postgres_server: Any) -> Iterator[Instance]:
    if request.param == "celery":
        try:
            services.check_servers(redis_needed=True)
        except services.ServiceError as exc:
            pytest.fail(str(exc), pytrace=False)
    started = _start(request.param)
    try:
        wait_for(
            "shardmigrate airflow to print that Airflow is ready",
            lambda: "Airflow is ready" in started.printed(),
            READY_TIMEOUT,
            started.alive,
        )
        started.ready_s = time.monotonic() - started.started
        started.api = AirflowApi(started.url, get_token(started.url, "admin", started.password()))
        print(f"\n[make airflow/{request.param}] usable UI {started.ready_s:.1f}s after the start; {started.output}")
        yield started
    finally:
        _stop(started)


def test_ready_means_healthy_and_the_dags_parsed(instance: Instance) -> None:
    printed = instance.printed()
    assert instance.url in printed and "user            admin" in printed
    assert str(instance.home / "simple_auth_manager_passwords.json") in printed
    health = instance.rest().get("/api/v2/monitor/health")
    for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[part]["status"] == "healthy", health
    dags = instance.rest().dag_ids()
    for migration in (GOOD_MIGRATION, FAILING_MIGRATION):
        assert {f"shardmigrate__{migration}", f"shardmigrate__{migration}__rollback"} <= dags
    assert {"shardmigrate_status", "shardmigrate_drift"} <= dags
    info = json.loads((instance.workdir / INSTANCE_FILE).read_text())
    assert info["pid"] == instance.proc.pid and info["ready"] is True and info["url"] == instance.url


def test_a_second_start_in_the_same_folder_says_one_is_running(instance: Instance) -> None:
    done = subprocess.run(
        _command("--workdir", str(instance.workdir), "--port", str(free_port())),
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "already running" in done.stdout and instance.url in done.stdout and str(instance.proc.pid) in done.stdout
    instance.alive()


def test_a_second_start_elsewhere_on_the_same_port_says_the_port_is_taken(instance: Instance, tmp_path: Path) -> None:
    elsewhere = tmp_path / "other"
    done = subprocess.run(
        _command("--workdir", str(elsewhere), "--port", str(instance.port)),
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 4, done.stdout + done.stderr
    assert f"port {instance.port} on 127.0.0.1 is taken" in done.stdout
    assert not elsewhere.exists(), "a refused start leaves no folder behind"
    instance.alive()


def test_rollouts_through_the_rest_api_fail_on_the_legacy_shard_and_roll_back_the_others(instance: Instance) -> None:
    good = f"shardmigrate__{GOOD_MIGRATION}"
    run_id, run = instance.run(good)
    assert run["state"] == "success"
    assert instance.report(good, run_id) == dict.fromkeys(SHARDS, "succeeded")
    assert instance.history(GOOD_MIGRATION) == dict.fromkeys(SHARDS, "applied")

    failing = f"shardmigrate__{FAILING_MIGRATION}"
    run_id, run = instance.run(failing)
    assert run["state"] == "failed"
    expected = dict.fromkeys(SHARDS, "rolled_back") | {LEGACY_SHARD: "failed"}
    assert instance.report(failing, run_id) == expected
    # SQLite runs the DDL and the history row in one transaction: the failed shard has no row at all
    assert instance.history(FAILING_MIGRATION) == expected | {LEGACY_SHARD: "-"}


CHROMIUM = Path(os.environ.get("SHARDMIGRATE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.browser
def test_the_grid_shows_the_failed_shard_and_the_rollbacks_after_logging_in(instance: Instance) -> None:
    """What the README's walk-through shows: logged in with the generated password, the failed run's Grid has the
    legacy shard failed and one rollback task instance per other shard (screenshot in the run's folder)."""
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM} (scripts/install-system-deps.sh installs it)", pytrace=False)
    from playwright.sync_api import expect, sync_playwright

    dag_id = f"shardmigrate__{FAILING_MIGRATION}"
    runs = instance.rest().get(f"/api/v2/dags/{dag_id}/dagRuns", order_by="-run_after", limit=1)["dag_runs"]
    assert runs and runs[0]["state"] == "failed"
    expect.set_options(timeout=60_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{instance.url}/dags/{dag_id}/runs/{runs[0]['dag_run_id']}")
            page.wait_for_url("**/auth/login**")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(instance.password())
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/auth/login" not in url)
            if "/runs/" not in page.url:
                page.goto(f"{instance.url}/dags/{dag_id}/runs/{runs[0]['dag_run_id']}")
            rows = page.locator("tbody tr")
            expect(rows.filter(has_text="shards.apply").filter(has_text=LEGACY_SHARD)).to_contain_text("Failed")
            expect(rows.filter(has_text="rollbacks.rollback").filter(has_text="Success")).to_have_count(5)
            expect(rows.filter(has_text="gate")).to_contain_text("Failed")
            page.screenshot(path=str(instance.output.parent / "grid-failed-run.png"))
        finally:
            browser.close()


def test_fixing_the_shard_and_clearing_its_task_makes_the_run_succeed(instance: Instance) -> None:
    """The README's walk-through: a run without auto-rollback fails on the legacy shard only; fix its data,
    clear its task with downstream, and the run ends success."""
    api, dag_id = instance.rest(), f"shardmigrate__{FAILING_MIGRATION}"
    run_id, run = instance.run(dag_id, {"auto_rollback": False})
    assert run["state"] == "failed"
    assert instance.report(dag_id, run_id) == dict.fromkeys(SHARDS, "succeeded") | {LEGACY_SHARD: "failed"}
    conn = sqlite3.connect(instance.shard(LEGACY_SHARD))
    with conn:
        conn.execute(LEGACY_FIX_SQL)
    conn.close()
    legacy = next(t for t in api.task_instances(dag_id, run_id) if t["rendered_map_index"] == LEGACY_SHARD)
    body = {
        "dry_run": False,
        "dag_run_id": run_id,
        "task_ids": [[legacy["task_id"], legacy["map_index"]]],
        "include_downstream": True,
        "only_failed": False,
        "reset_dag_runs": True,
    }
    api.request("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", json=body, expect=200)
    wait_for("the cleared run to be queued again", lambda: api.run(dag_id, run_id)["state"] != "failed", 60)
    run = api.wait_run(dag_id, run_id, timeout=RUN_TIMEOUT, alive=instance.alive)
    assert run["state"] == "success"
    assert instance.report(dag_id, run_id) == dict.fromkeys(SHARDS, "succeeded") | {LEGACY_SHARD: "succeeded"}
    assert instance.history(FAILING_MIGRATION) == dict.fromkeys(SHARDS, "applied")


def test_a_new_migration_folder_becomes_a_dag(instance: Instance) -> None:
    folder = instance.workdir / "dags" / "migrations" / SLOW_MIGRATION
    folder.mkdir()
    (folder / "up.sql").write_text(SLOW_UP)
    (folder / "down.sql").write_text("DROP TABLE order_summary;\n")
    (folder / "migration.yaml").write_text(
        "strategy: parallel\nmax_parallelism: 2\nper_shard_timeout: 600\ndepends_on: []\n"
    )
    began = time.monotonic()
    dag_id = f"shardmigrate__{SLOW_MIGRATION}"
    wait_for(f"{dag_id} in the REST API", lambda: dag_id in instance.rest().dag_ids(), 120, instance.alive)
    instance.timings["new_folder_s"] = time.monotonic() - began
    print(f"\n[make airflow/{instance.executor}] new migration folder -> DAG listed in {time.monotonic() - began:.1f}s")


def test_the_password_appears_in_no_log(instance: Instance) -> None:
    password = instance.password().encode()
    assert password not in instance.output.read_bytes()
    logs = [*(instance.workdir / "logs").rglob("*"), *(instance.home / "logs").rglob("*")]
    leaked = [path for path in logs if path.is_file() and password in path.read_bytes()]
    assert not leaked, leaked


def _processes_with_home(home: Path) -> list[int]:
    marker = f"AIRFLOW_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_sigterm_stops_every_process_it_started_and_frees_the_port(instance: Instance) -> None:
    api, dag_id = instance.rest(), f"shardmigrate__{SLOW_MIGRATION}"
    run_id = api.trigger(dag_id)["dag_run_id"]

    def shard_running() -> bool:
        return any(
            t["state"] == "running" and t["task_id"] == "shards.apply" for t in api.task_instances(dag_id, run_id)
        )

    wait_for("a shard task of the slow migration to run", shard_running, RUN_TIMEOUT, instance.alive)
    state = json.loads((instance.workdir / "deployment.json").read_text())
    times = start_times()
    seen = {pid: times[pid] for pid in process_tree(instance.proc.pid) if pid in times}
    seen |= snapshot(state["pgids"])
    with_home = _processes_with_home(instance.home)
    assert with_home and set(with_home) <= set(seen), "every Airflow process descends from the command"
    assert state["reaper_pid"] in seen

    instance.proc.send_signal(signal.SIGTERM)
    code = instance.proc.wait(timeout=120)
    printed = instance.printed()
    assert code == 0, tail(instance.output, 40)
    assert "nothing left running" in printed, tail(instance.output, 40)
    assert still_alive(seen) == [], "processes of the instance outlived it"
    assert not [pgid for pgid in state["pgids"] if group_members(pgid)]
    assert _processes_with_home(instance.home) == []
    assert port_is_free(instance.port)
    with (instance.workdir / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released: a new start may take the folder
    if instance.executor == "celery":
        import redis

        client = redis.Redis(host=services.REDIS_HOST, port=services.REDIS_PORT, db=int(state["redis_db"]))
        assert client.dbsize() == 0, "the claimed Redis DB is emptied"
    # the shard task was interrupted: the next start (or a new run) finds its history, nothing else changed
    assert instance.history(GOOD_MIGRATION) == dict.fromkeys(SHARDS, "applied")
