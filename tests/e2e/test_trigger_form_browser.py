"""The Trigger form in a real browser: Debian's Chromium driven by Playwright (never a downloaded browser)
logs in to the Airflow UI, opens the migration DAG, switches on "Stop on first failure" and "Auto-rollback"
(both off in migration.yaml), triggers, and the run shows up in the REST API with exactly that conf."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e import scenarios
from tests.e2e.conftest import E2E
from tests.e2e.deployment import USERNAME
from tests.e2e.project import migration_dag_id

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
DAG_ID = migration_dag_id(scenarios.BROWSER_NOTES.id)
UI_TIMEOUT_MS = 60_000


def test_trigger_form_in_chromium(e2e: E2E) -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: the browser test drives Debian's Chromium "
            "(run scripts/install-system-deps.sh, which installs the `chromium` package)",
            pytrace=False,
        )
    from playwright.sync_api import expect, sync_playwright

    api = e2e.api
    before = {r["dag_run_id"] for r in api.paginate(f"/api/v2/dags/{DAG_ID}/dagRuns", "dag_runs")}
    screenshot = e2e.output_dir / "trigger-form-filled.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"{e2e.deployment.url}/dags/{DAG_ID}")
            # Not logged in: the UI sends us to the SimpleAuthManager login page.
            page.wait_for_url("**/auth/login**")
            page.get_by_label("Username").fill(USERNAME)
            page.get_by_label("Password").fill(e2e.deployment.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/auth/login" not in url)
            if f"/dags/{DAG_ID}" not in page.url:
                page.goto(f"{e2e.deployment.url}/dags/{DAG_ID}")

            page.get_by_role("button", name="Trigger Dag").click()
            dialog = page.get_by_role("dialog")
            # The dialog names the DAG by its display name: the migration id (and description, none here).
            expect(dialog.get_by_text(f"Trigger Dag - {scenarios.BROWSER_NOTES.id}")).to_be_visible()
            stop = dialog.locator("input[name='element_stop_on_first_failure']")
            rollback = dialog.locator("input[name='element_auto_rollback']")
            dry_run = dialog.locator("input[name='element_dry_run']")
            # migration.yaml sets both off: the form starts with the DAG's defaults.
            expect(stop).not_to_be_checked()
            expect(rollback).not_to_be_checked()
            expect(dry_run).not_to_be_checked()
            dialog.locator("label#switch\\:element_stop_on_first_failure").click()
            dialog.locator("label#switch\\:element_auto_rollback").click()
            expect(stop).to_be_checked()
            expect(rollback).to_be_checked()
            expect(dry_run).not_to_be_checked()
            dialog.screenshot(path=str(screenshot))
            dialog.get_by_role("button", name="Trigger", exact=True).click()
            expect(dialog).to_be_hidden()
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000, "the screenshot of the filled form is missing or empty"

    # The run the browser created, read back through the REST API.
    end = time.monotonic() + 60
    while True:
        runs = [r for r in api.paginate(f"/api/v2/dags/{DAG_ID}/dagRuns", "dag_runs") if r["dag_run_id"] not in before]
        if runs or time.monotonic() > end:
            break
        time.sleep(0.5)
    assert len(runs) == 1, f"expected one new run from the UI, got {runs}"
    run = runs[0]
    assert run["conf"] == {
        "stop_on_first_failure": True,
        "auto_rollback": True,
        "dry_run": False,
        "max_failed_shards": None,
        "max_failure_ratio": None,
    }, run["conf"]
    assert run["run_type"] == "manual" and run["triggered_by"] == "ui", run
    finished = api.wait_run(DAG_ID, run["dag_run_id"], timeout=180, alive=e2e.alive)
    assert finished["state"] == "success"
    report = api.xcom(DAG_ID, run["dag_run_id"], "report")
    assert report["all_succeeded"] is True and report["succeeded_count"] == len(scenarios.REST_SHARDS)
    print(f"[e2e] screenshot of the filled Trigger form: {screenshot}")
