"""The UI tells the truth at a glance, checked in Chromium on the Celery deployment (Debian's Chromium driven by
Playwright, logged in through the Airflow login page) and through the REST API:

* the fleet page, inside the Airflow UI (Browse > Shard fleet), after a rollout that failed on one shard and
  auto-rolled back the others: the migration's run, its result and reason, the matrix with every shard's
  state, the counts, and the drift section agreeing with ``/shardmigrate/health``;
* the Grid of that run; the rollback DAG's trigger form with its pick-list of shards; the canary approval
  prompt (answered Reject in the UI, with a comment that lands in the report); the docs pane;
* the plugin's pages and API reference refuse anonymous requests (401), and a shard task's log has no
  plugin deprecation line and states a shard's error once before the traceback.

Screenshots are saved under the run's ``test-output/e2e/<run>/screenshots/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.e2e import ui_project
from tests.e2e.conftest import E2E
from tests.e2e.deployment import USERNAME
from tests.e2e.ui_project import ACTIVE, CANARY, FAILING, INACTIVE, SHARDS, STATUS_DAG_ID, UNIQUE, UiProject, wait

pytestmark = pytest.mark.browser

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
UI_TIMEOUT_MS = 60_000
UNIQUE_DAG = ui_project.rollout_dag_id(UNIQUE)
CANARY_DAG = ui_project.rollout_dag_id(CANARY)
ROLLBACK_DAG = f"{UNIQUE_DAG}__rollback"
ANONYMOUS_401 = [
    "/shardmigrate/docs",
    "/shardmigrate/redoc",
    "/shardmigrate/openapi.json",
    "/shardmigrate/fleet",
    "/shardmigrate/fleet/summary",
    "/shardmigrate/fleet/matrix",
    "/shardmigrate/static/fleet.js",
]


@pytest.fixture(scope="module")
def ui(e2e: E2E) -> UiProject:
    return ui_project.set_up(e2e)


@pytest.fixture(scope="module")
def failed_rollout(e2e: E2E, ui: UiProject) -> dict[str, Any]:
    """The unique index fails on the MariaDB shard (duplicate names); auto-rollback reverts the four others.
    Then the fleet's status DAG publishes the fleet status read from every shard's history."""
    api = e2e.api
    run_id = api.trigger(UNIQUE_DAG)["dag_run_id"]
    run = api.wait_run(UNIQUE_DAG, run_id, timeout=240, alive=e2e.alive)
    assert run["state"] == "failed"
    report = api.xcom(UNIQUE_DAG, run_id, "report")
    expected = {shard: "rolled_back" for shard in ACTIVE}
    expected[FAILING] = "failed"
    assert {s: v["outcome"] for s, v in report["shards"].items()} == expected
    status = ui.expected_fleet_status(e2e)
    column = status["migrations"].index(UNIQUE.id)
    assert [s["row"][column] for s in status["shards"]] == ["X", "X", "F", "X", "X", "-"]
    published = api.trigger(STATUS_DAG_ID)["dag_run_id"]
    assert api.wait_run(STATUS_DAG_ID, published, timeout=180, alive=e2e.alive)["state"] == "success"
    matrix = api.xcom(STATUS_DAG_ID, published, "publish")
    rows = {s["id"]: s["row"][: len(status["migrations"])] for s in matrix["shards"]}
    assert rows == {s["id"]: s["row"] for s in status["shards"]}, matrix
    return {"run_id": run_id, "report": report, "status": status}


@pytest.fixture(scope="module")
def browser_page(e2e: E2E) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: the browser tests drive Debian's Chromium "
            "(run scripts/install-system-deps.sh, which installs the `chromium` package)",
            pytrace=False,
        )
    from playwright.sync_api import expect, sync_playwright

    # Every expectation waits for the page to reach a state; on a loaded machine that takes longer than
    # Playwright's default 5 s, so they wait as long as the page's own actions do.
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"{e2e.deployment.url}/plugin/{ui_project.FLEET_ROUTE}")
            page.wait_for_url("**/auth/login**")  # the page is behind Airflow's login
            page.get_by_label("Username").fill(USERNAME)
            page.get_by_label("Password").fill(e2e.deployment.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/auth/login" not in url)
            yield page
        finally:
            browser.close()


def _shot(e2e: E2E, target: Any, name: str, *, height: int | None = None) -> Path:
    """Save a screenshot of a page (full page; ``height``: a taller window first, for the fleet page, whose
    frame is as tall as the window) or of one element."""
    folder = e2e.output_dir / "screenshots"
    folder.mkdir(exist_ok=True)
    path = folder / name
    if hasattr(target, "goto"):
        if height:
            target.set_viewport_size({"width": 1400, "height": height})
            target.wait_for_timeout(500)  # let the frame take the new height before the picture (not an assertion)
        target.screenshot(path=str(path), full_page=True)
        target.set_viewport_size({"width": 1400, "height": 1000})
    else:
        target.screenshot(path=str(path))
    assert path.stat().st_size > 10_000, f"screenshot {path} is missing or empty"
    print(f"[e2e] screenshot: {path}")
    return path


def test_plugin_pages_and_api_reference_need_a_login(e2e: E2E) -> None:
    url = e2e.deployment.url
    for path in ANONYMOUS_401:
        response = httpx.get(url + path, timeout=30)
        assert response.status_code == 401, (path, response.status_code, response.text[:200])
    docs = e2e.api.request("GET", "/shardmigrate/docs", expect=200)
    assert "GET /fleet/summary" in docs.text and "https://" not in docs.text  # no CDN


def _task_logs(e2e: E2E, dag_id: str, run_id: str) -> dict[str, str]:
    """Log text of every shard task instance of a run, by shard id (read where the workers wrote it)."""
    logs = {}
    for ti in e2e.api.task_instances(dag_id, run_id):
        if ti["task_id"] != "shards.apply":
            continue
        folder = e2e.deployment.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / "task_id=shards.apply"
        files = sorted((folder / f"map_index={ti['map_index']}").glob("attempt=*.log"))
        assert files, f"no task log for {ti['rendered_map_index']} under {folder}"
        logs[ti["rendered_map_index"]] = files[-1].read_text()
    return logs


def test_shard_task_logs_have_no_plugin_line_and_state_the_error_once(e2e: E2E, failed_rollout: dict) -> None:
    logs = _task_logs(e2e, UNIQUE_DAG, failed_rollout["run_id"])
    assert sorted(logs) == sorted(ACTIVE)
    for shard, text in logs.items():
        # The plugin's FastAPI app is built only in the api-server: no import-time warning of it in a task.
        assert "starlette" not in text and "DeprecationWarning" not in text, f"{shard}: {text[:600]}"
    events = [json.loads(line) for line in logs[FAILING].splitlines() if line.startswith("{")]
    failed_at = next(i for i, e in enumerate(events) if e.get("event") == "Task failed with exception")
    stated = [e for e in events[:failed_at] if "Duplicate entry" in str(e.get("event"))]
    assert len(stated) == 1, [e.get("event") for e in events[:failed_at]]
    assert stated[0]["level"] == "error" and "[shardmigrate.migration_failed]" in stated[0]["event"]


def test_fleet_page_after_a_partial_failure_with_auto_rollback(
    e2e: E2E, failed_rollout: dict, browser_page: Any
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{e2e.deployment.url}/plugin/{ui_project.FLEET_ROUTE}")
    frame = page.frame_locator("iframe")  # rendered inside the Airflow UI
    frame.locator("#f-fleet").select_option(ui_project.FLEET)  # the dags folder holds several fleets
    row = frame.locator(f"tr[data-migration='{UNIQUE.id}']")
    expect(row).to_contain_text("failed")
    expect(row).to_contain_text(failed_rollout["run_id"])
    expect(row).to_contain_text("4 rolled back · 1 failed")
    expect(row).to_contain_text("rolled_back 4 · failed 1 · not_applied 1")  # where every shard stands
    expect(frame.locator("#status-line")).to_contain_text("6 shard(s), 5 active; 0 with an error, 0 unreadable")
    # every active shard lacks the canary migration (never run); none is unreadable, and the line says so
    expect(frame.locator("#status-line")).to_contain_text("INCOMPLETE: 5 active shard(s) lack a migration.")
    column = [spec.id for spec in ui_project.MIGRATIONS].index(UNIQUE.id)
    for shard, cell in zip(SHARDS, ["X", "X", "F", "X", "X", "-"], strict=True):
        expect(frame.locator(f"tr[data-shard='{shard}'] td.cell").nth(column)).to_have_text(cell)
    expect(frame.locator(f"tr[data-shard='{INACTIVE}']")).to_contain_text("(inactive)")
    expect(frame.locator("#page-info")).to_contain_text("of 6 matching (6 in the fleet)")
    health = e2e.api.request("GET", "/shardmigrate/health")
    drift = frame.locator("#drift-body")
    if health.status_code == 200:
        expect(drift).to_contain_text(health.json()["health"]["status"])
    else:
        expect(drift).to_contain_text("No drift report has been published yet")
    # Filtering the matrix server-side: only the failed shard.
    frame.locator("#f-status").select_option("F")
    expect(frame.locator("#page-info")).to_contain_text("Shards 1 to 1 of 1 matching")
    expect(frame.locator("tr[data-shard]")).to_have_count(1)
    frame.locator("#f-status").select_option("")
    expect(frame.locator("tr[data-shard]")).to_have_count(len(SHARDS))
    _shot(e2e, page, "fleet-page-after-partial-failure.png", height=1900)


def test_grid_of_the_failed_run(e2e: E2E, failed_rollout: dict, browser_page: Any) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{e2e.deployment.url}/dags/{UNIQUE_DAG}/runs/{quote(failed_rollout['run_id'], safe='')}")
    expect(page.get_by_text("e2e_ui_unique · Unique customer names").first).to_be_visible()
    page.get_by_role("button", name="Expand all task groups").click()
    rows = page.locator("tbody tr")
    expect(rows.filter(has_text=FAILING)).to_contain_text("Failed")
    for shard in ACTIVE:
        expect(rows.filter(has_text=shard).first).to_be_visible()
    expect(rows.filter(has_text="gate")).to_contain_text("Failed")
    _shot(e2e, page, "grid-of-the-failed-run.png")


def test_rollback_form_offers_a_pick_list(e2e: E2E, failed_rollout: dict, browser_page: Any) -> None:
    from playwright.sync_api import expect

    page, api = browser_page, e2e.api
    before = {r["dag_run_id"] for r in api.paginate(f"/api/v2/dags/{ROLLBACK_DAG}/dagRuns", "dag_runs")}
    page.goto(f"{e2e.deployment.url}/dags/{ROLLBACK_DAG}")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator("label", has_text="Shards to roll back")).to_be_visible()
    dialog.locator("#element_shards").click()
    options = page.locator("[id^=react-select][id*=-option-]")
    expect(options).to_have_text(["all (every active shard)", *ACTIVE, f"{INACTIVE} (inactive)"])
    _shot(e2e, page, "rollback-trigger-form-pick-list.png")
    options.filter(has_text="ui-1").click()
    dialog.locator("#element_shards").click()
    page.locator("[id^=react-select][id*=-option-]").filter(has_text=INACTIVE).click()
    expect(dialog.locator("#element_shards")).to_contain_text("ui-1")
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    expect(dialog).to_be_hidden()
    runs = wait(
        "the run the form created",
        lambda: [
            r for r in api.paginate(f"/api/v2/dags/{ROLLBACK_DAG}/dagRuns", "dag_runs") if r["dag_run_id"] not in before
        ],
        alive=e2e.alive,
    )
    (run,) = runs
    assert run["conf"] == {"shards": ["ui-1", INACTIVE], "dry_run": False}, run["conf"]
    finished = api.wait_run(ROLLBACK_DAG, run["dag_run_id"], timeout=180, alive=e2e.alive)
    assert finished["state"] == "success"
    report = api.xcom(ROLLBACK_DAG, run["dag_run_id"], "report")
    outcomes = {s: v["outcome"] for s, v in report["shards"].items()}
    assert outcomes["ui-1"] == "not_applied" and outcomes[INACTIVE] == "not_applied"  # auto-rollback undid ui-1
    assert {outcomes[s] for s in SHARDS if s not in ("ui-1", INACTIVE)} == {"not_selected"}


def test_canary_approval_prompt_rejected_in_the_ui(e2e: E2E, ui: UiProject, browser_page: Any) -> None:
    from playwright.sync_api import expect

    page, api = browser_page, e2e.api
    run_id = api.trigger(CANARY_DAG)["dag_run_id"]
    path = f"/api/v2/dags/{CANARY_DAG}/dagRuns/{run_id}/taskInstances"

    def asked() -> bool:
        states = {t["task_id"]: t["state"] for t in api.task_instances(CANARY_DAG, run_id)}
        assert states.get("shards.canary") != "failed", states
        return states.get("shards.canary_approval") == "awaiting_input"

    wait("the canary approval to be asked", asked, alive=e2e.alive)
    # While it waits, the fleet page shows the live progress and where to answer.
    page.goto(f"{e2e.deployment.url}/plugin/{ui_project.FLEET_ROUTE}")
    frame = page.frame_locator("iframe")
    row = frame.locator(f"tr[data-migration='{CANARY.id}']")
    expect(row).to_contain_text("awaiting approval")
    expect(row).to_contain_text("waiting for the canary approval · 1/5 at the migration")
    _shot(e2e, page, "fleet-page-live-progress.png", height=1900)

    page.goto(
        f"{e2e.deployment.url}/dags/{CANARY_DAG}/runs/{quote(run_id, safe='')}/tasks/shards.canary_approval"
        "/required_actions?map_index=-1"
    )
    expect(page.get_by_text("Approve canary ui-0 of e2e_ui_canary?")).to_be_visible()
    expect(page.get_by_text("Canary shard ui-0 of migration")).to_contain_text("succeeded")
    expect(page.get_by_text("the validation query returned")).to_contain_text("3")
    page.locator("input[name='element_comment']").fill("canary p99 latency doubled")
    _shot(e2e, page, "canary-approval-prompt.png")
    page.get_by_role("button", name="Reject").click()
    run = api.wait_run(CANARY_DAG, run_id, timeout=180, alive=e2e.alive)
    assert run["state"] == "failed"
    report = api.xcom(CANARY_DAG, run_id, "report")
    assert report["halted_reason"] == (
        f"canary approval rejected by {USERNAME}: canary p99 latency doubled; the other shards were not started"
    )
    outcomes = {s: v["outcome"] for s, v in report["shards"].items()}
    assert outcomes == {"ui-0": "succeeded", **{s: "pending" for s in ACTIVE if s != "ui-0"}}
    decision = api.xcom(CANARY_DAG, run_id, "shards.canary_approval")
    assert decision["approved"] is False and decision["by"] == USERNAME
    assert api.get(f"{path}/shards.canary_approval/-1/hitlDetails")["responded_by_user"]["name"] == USERNAME


def test_docs_pane_shows_the_sql_without_clipping(e2e: E2E, ui: UiProject, browser_page: Any) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{e2e.deployment.url}/dags/{CANARY_DAG}")
    page.get_by_role("button", name="Dag Docs").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("SELECT COUNT(*) FROM customers")
    expect(dialog).to_contain_text("DROP INDEX e2e_ui_canary_idx ON customers;")
    expect(dialog).to_contain_text("rest of the fleet, 2 at a time (4): ui-1, ui-2, ui-3, ui-4")
    overflowing = page.evaluate(
        """() => {
            const pane = [...document.querySelectorAll('[role=dialog]')].find(d => d.clientWidth > 0);
            return [...pane.querySelectorAll('*')]
                .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
                .map(e => [e.tagName, e.scrollWidth, e.clientWidth]);
        }"""
    )
    assert overflowing == [], f"the docs pane scrolls sideways (content cut off): {overflowing}"
    _shot(e2e, dialog, "docs-pane.png")
    dialog.get_by_text("down.mysql.sql").scroll_into_view_if_needed()
    _shot(e2e, dialog, "docs-pane-scripts.png")
