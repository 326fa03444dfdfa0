"""The dashboard in a real headless Chromium against the real API under uvicorn."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from cluster_jobs import WAITING_GPU, add_job, busy_cluster, record, user_ids
from dashboard_support import DESKTOP, PHONE
from servers import database_session
from tiny_jobs import SPEC, claim_order, run_job

from server.jobs.forecast import BEHIND_UNKNOWN, HELD_UNKNOWN
from silo_client.cluster_tables import NO_REASON
from workers.attempt import run_attempt

pytestmark = pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)

WAIT_SECONDS = 15


def wait_for(browser, condition, what: str):
    """Poll ``condition(browser)`` until it is truthy; fail naming ``what``."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, WAIT_SECONDS, poll_frequency=0.1).until(condition)
    except TimeoutException:
        pytest.fail(f"timed out waiting for {what}", pytrace=False)


def css(browser, selector: str) -> list:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, selector)


def sign_in(browser, token: str) -> None:
    field = css(browser, "#token-input")[0]
    field.send_keys(token)
    css(browser, "#signin button[type=submit]")[0].click()


def open_page(browser, live_server, route: str, user: str | None = "alice") -> None:
    browser.get(f"{live_server.base_url}/{route}")
    wait_for(browser, lambda b: css(b, "#signin:not([hidden])"), "the sign-in form")
    if user:
        sign_in(browser, live_server.tokens[user])


def chart_data(browser, name: str) -> list[list] | None:
    """The data arrays of the page's uPlot chart ``name`` (None until drawn)."""
    return browser.execute_script(
        "const el = document.querySelector(`[data-chart='${arguments[0]}']`);"
        "return el && el.uplot ? el.uplot.data : null;",
        name,
    )


def axis_labels(browser, name: str) -> list[list[str]] | None:
    """The tick labels uPlot drew on each axis of chart ``name`` (None until drawn)."""
    return browser.execute_script(
        "const u = document.querySelector(`[data-chart='${arguments[0]}']`)?.uplot;"
        "return u && u.axes.every(a => a._values) ? u.axes.map(a => a._values) : null;",
        name,
    )


def report(order, kind: str, body: dict) -> None:
    """POST ``body`` to the attempt's intake route ``kind``, as its worker would."""
    response = httpx.post(
        f"{order.api_url}/v1/jobs/{order.job_id}/attempts/{order.attempt}/{kind}",
        json=body,
        headers={"Authorization": f"Bearer {order.token}"},
    )
    assert response.status_code == 200, response.text


def script_errors(browser) -> list[str]:
    """Console errors other than the failed requests a test provokes on purpose."""
    return [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]


def screenshots(browser, out: Path, name: str) -> None:
    """Save the page at desktop and phone width; at phone width the page itself
    must not scroll sideways (its tables do, in their own boxes)."""
    out.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(out / f"{name}-{DESKTOP[0]}.png"))
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 1, "mobile": True},
    )
    try:
        time.sleep(0.3)  # the charts follow the new width through a ResizeObserver
        page_width = browser.execute_script("return document.documentElement.scrollWidth")
        assert page_width <= PHONE[0], f"{name}: the page is {page_width}px wide at phone width"
        browser.save_screenshot(str(out / f"{name}-{PHONE[0]}.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_no_job_is_shown_before_the_token_then_the_list_updates_live(live_server, browser):
    with live_server.client() as client:
        client.post("/v1/jobs", json={"spec": SPEC, "name": "first-job"}).raise_for_status()
    open_page(browser, live_server, "#/jobs", user=None)
    assert css(browser, "#need-token")
    assert "first-job" not in browser.page_source
    requested = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert not [url for url in requested if "/v1/" in url]  # nothing was even asked

    sign_in(browser, live_server.tokens["alice"])
    wait_for(browser, lambda b: "first-job" in b.page_source, "the job in the table")
    assert (
        browser.execute_script("return localStorage.getItem('silo.token')")
        == (live_server.tokens["alice"])
    )
    # A job submitted now shows up by the 2 s poll, without a reload.
    with live_server.client() as client:
        client.post("/v1/jobs", json={"spec": SPEC, "name": "second-job"}).raise_for_status()
    wait_for(browser, lambda b: "second-job" in b.page_source, "the new job without a reload")
    assert len(css(browser, "table tbody tr")) == 2

    css(browser, "#signout")[0].click()
    assert browser.execute_script("return localStorage.getItem('silo.token')") is None
    assert "first-job" not in browser.page_source
    assert script_errors(browser) == []


def test_the_pages_polls_ask_with_the_etag_and_get_304s_while_nothing_changes(live_server, browser):
    with live_server.client() as client:
        client.post("/v1/jobs", json={"spec": SPEC, "name": "idle-job"}).raise_for_status()
    open_page(browser, live_server, "#/jobs")
    wait_for(browser, lambda b: "idle-job" in b.page_source, "the job in the table")

    def list_answers(b) -> list[int]:
        return b.execute_script(
            "return performance.getEntriesByType('resource')"
            ".filter(e => new URL(e.name).pathname === '/v1/jobs').map(e => e.responseStatus)"
        )

    # The list is polled every 2 s: after the first answer, the unchanged ones are 304s.
    wait_for(browser, lambda b: list_answers(b).count(304) >= 2, "two 304 answers to the polls")
    assert list_answers(browser)[0] == 200
    with live_server.client() as client:
        client.post("/v1/jobs", json={"spec": SPEC, "name": "new-job"}).raise_for_status()
    wait_for(browser, lambda b: "new-job" in b.page_source, "the new job after the 304s")
    assert "idle-job" in browser.page_source
    assert script_errors(browser) == []


def test_a_refused_token_shows_the_api_message_and_asks_for_the_token_again(live_server, browser):
    open_page(browser, live_server, "#/jobs", user=None)
    sign_in(browser, "not-a-real-token")
    error = wait_for(browser, lambda b: css(b, "#error:not([hidden])"), "the error line")[0]
    assert "the token is unknown or revoked" in error.text
    assert "enter it again" in error.text
    assert css(browser, "#signin:not([hidden])")
    assert browser.execute_script("return localStorage.getItem('silo.token')") is None
    assert script_errors(browser) == []


def test_a_finished_job_draws_its_charts_and_tables_from_the_api(live_server, browser, tmp_path):
    job_id = run_job(live_server, SPEC)
    with live_server.client() as client:
        cycles = client.get(f"/v1/jobs/{job_id}/cycles").json()["items"]
        events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["items"]
        artifacts = client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]
    assert len(cycles) == 3 and len(events) == 6

    open_page(browser, live_server, "#/jobs")
    row = wait_for(browser, lambda b: css(b, f"tr[data-key='{job_id}']"), "the job's row")[0]
    wait_for(browser, lambda _: "succeeded" in row.text and "mlp / digits" in row.text, "details")
    progress = row.find_element("css selector", "progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == "3"
    screenshots(browser, tmp_path / "output", "jobs")

    row.find_element("css selector", f"a[href='#/jobs/{job_id}']").click()
    wait_for(browser, lambda b: (chart_data(b, "training") or [[]])[0], "the training curves")
    assert chart_data(browser, "accuracy") == [
        [c["sparsity"] for c in cycles],
        [c["test_accuracy_at_best_val"] for c in cycles],
    ]
    assert chart_data(browser, "max-lr") == [
        [c["cycle"] for c in cycles],
        [c["max_lr"] for c in cycles],
    ]
    assert chart_data(browser, "training") == [
        list(range(1, len(events) + 1)),
        [e["val_accuracy"] for e in events],
        [e["train_accuracy"] for e in events],
        [e["lr"] for e in events],
    ]
    # uPlot drew a line per series: its paths are built only for drawn series.
    drawn = browser.execute_script(
        "return document.querySelector(\"[data-chart='training']\")"
        ".uplot.series.slice(1).map(s => Boolean(s._paths))"
    )
    assert drawn == [True, True, True]
    table_rows = css(browser, "[aria-label='Cycle table'] tbody tr")
    assert [r.find_elements("css selector", "td")[0].text for r in table_rows] == ["0", "1", "2"]
    names = [b.get_attribute("aria-label") for b in css(browser, "#artifacts button.download")]
    assert names == [f"Download {a['name']}" for a in artifacts]
    assert css(browser, "#cancel-job")[0].get_attribute("disabled") is not None
    screenshots(browser, tmp_path / "output", "job")
    assert script_errors(browser) == []


def test_download_saves_the_artifact_fetched_with_the_token(live_server, browser, tmp_path):
    job_id = run_job(live_server, SPEC)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    open_page(browser, live_server, f"#/jobs/{job_id}")
    button = wait_for(
        browser, lambda b: css(b, "button[aria-label='Download cycles.csv']"), "the button"
    )[0]
    button.click()
    saved = downloads / "cycles.csv"
    wait_for(browser, lambda _: saved.exists() and saved.stat().st_size, "the saved file")
    with live_server.client() as client:
        expected = client.get(f"/v1/jobs/{job_id}/artifacts/cycles.csv").content
    assert saved.read_bytes() == expected


def test_cancel_on_a_running_job_changes_the_status_on_the_page(live_server, browser):
    job_id = claim_order(live_server, SPEC).job_id  # claimed: running, no worker
    open_page(browser, live_server, f"#/jobs/{job_id}")
    wait_for(browser, lambda b: css(b, "#job-summary .status-running"), "running")
    cancel = css(browser, "#cancel-job")[0]
    wait_for(browser, lambda _: cancel.is_enabled(), "the cancel button")
    cancel.click()
    wait_for(browser, lambda b: css(b, "#job-summary .status-cancelling"), "cancelling")
    with live_server.client() as client:
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelling"
    assert not cancel.is_enabled()
    assert script_errors(browser) == []


def test_the_jobs_page_shows_a_running_job_s_note_from_its_heartbeat(live_server, browser):
    order = claim_order(live_server, SPEC)
    note = "Oracle search: 7/40 trial epochs, best so far max_lr 0.1 (91.0% val)"
    report(order, "status", {"status": "running", "note": note})
    open_page(browser, live_server, "#/jobs")
    shown = wait_for(browser, lambda b: css(b, ".progress-note"), "the progress note")
    assert shown[0].text == note
    row = css(browser, "#main table tbody tr")[0]
    assert f"#{order.job_id}" in row.text and "running" in row.text
    assert script_errors(browser) == []


def test_a_study_page_compares_schedules_over_seeds(live_server, browser, tmp_path):
    body = {"spec": SPEC, "schedules": [{"name": "silo"}, {"name": "fine_tune"}], "seeds": [0, 1]}
    with live_server.client() as client:
        response = client.post("/v1/studies", json={**body, "name": "silo-vs-ft"})
        assert response.status_code == 201, response.text
        study_id = response.json()["id"]
    for _ in range(3):  # one member stays queued
        assert run_attempt(claim_order(live_server)).status == "succeeded"
    with live_server.client() as client:
        study = client.get(f"/v1/studies/{study_id}").json()
    comparison = study["comparison"]
    assert len(comparison) == 3

    open_page(browser, live_server, "#/studies")
    link = wait_for(browser, lambda b: css(b, f"a[href='#/studies/{study_id}']"), "the study")[0]
    link.click()
    wait_for(browser, lambda b: chart_data(b, "comparison"), "the comparison chart")
    data = chart_data(browser, "comparison")
    assert data[0] == [row["sparsity"] for row in comparison]
    for i, label in enumerate(study["schedules"]):
        cells = [row["test_accuracy"].get(label) for row in comparison]
        mean, upper, lower = data[1 + 3 * i : 4 + 3 * i]
        assert mean == [c["mean"] for c in cells]
        for cell, hi, lo in zip(cells, upper, lower, strict=True):
            if cell["std"] is None:
                assert hi is None and lo is None  # one seed: no spread to draw
            else:
                band = (cell["mean"] + cell["std"], cell["mean"] - cell["std"])
                assert (hi, lo) == pytest.approx(band)
    assert any(c["std"] is not None for row in comparison for c in row["test_accuracy"].values())
    headers = [th.text for th in css(browser, "[aria-label^='Comparison'] thead th")]
    assert headers == ["Cycle", "Sparsity", *study["schedules"]]
    assert len(css(browser, "[aria-label^='Comparison'] tbody tr")) == len(comparison)
    member_headers = [th.text for th in css(browser, "[aria-label='Member jobs'] thead th")]
    assert member_headers[-1] == "Best val accuracy"
    links = css(browser, "[aria-label='Member jobs'] a")
    assert [a.get_attribute("href").split("#")[1] for a in links] == [
        f"/jobs/{m['job_id']}" for m in study["members"]
    ]
    # Each member's progress bar comes with the study: full for the three that ran.
    bars = css(browser, "[aria-label='Member jobs'] progress")
    full = [bar.get_attribute("value") == bar.get_attribute("max") for bar in bars]
    assert full == [m["status"] == "succeeded" for m in study["members"]]
    assert sum(full) == 3
    screenshots(browser, tmp_path / "output", "study")
    assert script_errors(browser) == []


def test_an_oracle_job_charts_each_grid_value_s_accuracy_per_cycle(live_server, browser):
    grid = [0.01, 0.1]
    job_id = run_job(live_server, {**SPEC, "schedule": {"name": "oracle", "grid": grid}})
    with live_server.client() as client:
        cycles = client.get(f"/v1/jobs/{job_id}/cycles").json()["items"]
    searched = [c for c in cycles if "oracle" in c["extras"]]
    assert [c["cycle"] for c in searched] == [1, 2]

    open_page(browser, live_server, f"#/jobs/{job_id}")
    data = wait_for(browser, lambda b: chart_data(b, "oracle"), "the Oracle chart")
    assert data == [
        [c["cycle"] for c in searched],
        *([c["extras"]["oracle"]["best_val_accuracy"][g] for c in searched] for g in range(2)),
    ]
    labels = browser.execute_script(
        "return document.querySelector(\"[data-chart='oracle']\")"
        ".uplot.series.slice(1).map(s => s.label)"
    )
    assert labels == ["max_lr 0.0100", "max_lr 0.100"]
    assert chart_data(browser, "max-lr")[1] == [c["max_lr"] for c in cycles]
    assert script_errors(browser) == []


def test_a_narrow_accuracy_range_gets_ticks_with_the_decimals_it_needs(live_server, browser):
    # Accuracies between 96 % and 98 %: whole-percent ticks would read 97%, 97%, 97%.
    order = claim_order(live_server, SPEC)
    accuracy = [0.981, 0.975, 0.968, 0.961]
    sparsity = [0.0, 0.5, 0.75, 0.875]
    for cycle, (acc, sp) in enumerate(zip(accuracy, sparsity, strict=True)):
        epoch = {"cycle": cycle, "epoch": 1, "epochs": 1, "cycles": 3, "lr": 0.01, "max_lr": 0.1}
        losses = {"train_loss": 0.1, "val_loss": 0.1, "sparsity": sp, "seconds": 1.0}
        event = {**epoch, **losses, "train_accuracy": acc - 0.001, "val_accuracy": acc}
        report(order, "events", {"events": [event]})
        row = {"cycle": cycle, "sparsity": sp, "alive_weights": 100, "max_lr": 0.1}
        scores = {"best_val_accuracy": acc, "final_val_accuracy": acc, "final_test_accuracy": acc}
        report(
            order,
            "cycles",
            {**row, **scores, "best_epoch": 1, "test_accuracy_at_best_val": acc, "seconds": 1.0},
        )

    open_page(browser, live_server, f"#/jobs/{order.job_id}")
    wait_for(browser, lambda b: len((chart_data(b, "accuracy") or [[]])[0]) == 4, "the cycles")
    for name in ("accuracy", "training"):
        labels = wait_for(browser, lambda b, n=name: axis_labels(b, n), f"the {name} axes")
        ticks = [t for t in labels[1] if t]  # the accuracy axis
        assert len(ticks) >= 3, f"{name}: {ticks}"
        assert len(set(ticks)) == len(ticks), f"{name}: repeated tick labels {ticks}"
        assert all("." in t and t.endswith("%") for t in ticks), f"{name}: {ticks}"
        assert all(96 <= float(t[:-1]) <= 98.5 for t in ticks), f"{name}: {ticks}"
    # Sparsity spans 0-87.5 %: its ticks are far apart and need no decimals.
    sparsity_ticks = [t for t in axis_labels(browser, "accuracy")[0] if t]
    assert len(set(sparsity_ticks)) == len(sparsity_ticks) >= 3
    assert all(t[:-1].isdigit() for t in sparsity_ticks), sparsity_ticks

    # The rule itself, on the steps uPlot picks (1, 2, 2.5 or 5 times a power of ten).
    steps = [0.2, 0.1, 0.05, 0.01, 0.005, 0.0025, 0.001, 0.0005, 0.3 * 0.1 / 3]
    decimals = browser.execute_async_script(
        "const [steps, done] = arguments;"
        "import('/static/js/charts.js').then(m => done(steps.map(m.pctDecimals)));",
        steps,
    )
    assert decimals == [0, 0, 0, 0, 1, 2, 1, 2, 0]

    # The job's best accuracy is its best validation accuracy, and says so.
    terms = [dt.text for dt in css(browser, "#job-summary dt")]
    assert "Best val accuracy" in terms and "Best accuracy" not in terms
    best = css(browser, "#job-summary dd")[terms.index("Best val accuracy")].text
    assert best == f"{max(accuracy):.2%}"
    browser.execute_script("location.hash = '#/jobs'")
    row = wait_for(browser, lambda b: css(b, f"tr[data-key='{order.job_id}']"), "the job's row")[0]
    headers = [th.text for th in css(browser, "#main table thead th")]
    cells = [td.text for td in row.find_elements("css selector", "td")]
    assert cells[headers.index("Best val accuracy")] == best
    assert script_errors(browser) == []


def test_the_cluster_page_shows_capacity_owners_reasons_and_estimated_starts(
    live_server, browser, tmp_path
):
    jobs = busy_cluster(live_server)
    open_page(browser, live_server, "#/cluster")
    head_rows = "[aria-label^='Next to run'] tbody tr"
    wait_for(browser, lambda b: len(css(b, head_rows)) == 3, "the head of the queue")
    assert css(browser, "nav a[aria-current=page]")[0].text == "Cluster"
    assert "2 nodes, measured" in css(browser, "#cluster-capacity")[0].text

    def cells(region: str) -> list[list[str]]:
        rows = css(browser, f"[aria-label^='{region}'] tbody tr")
        return [[td.text for td in row.find_elements("css selector", "td")] for row in rows]

    assert cells("Capacity and use") == [
        ["CPU", "8", "3", "5", "4"],
        ["GPU", "2", "2", "0", "2"],
        ["Memory (GB)", "32", "–", "–", "16"],
    ]
    assert [row[:5] for row in cells("Owners")] == [
        ["alice", "1", "2", "1", "2"],
        ["bob", "1", "1", "1", "1"],
    ]
    assert cells("Queued jobs by reason") == [["2", WAITING_GPU], ["1", NO_REASON]]
    head = cells("Next to run")
    assert [row[1] for row in head] == [f"#{jobs[n]}" for n in ("first", "second", "third")]
    assert head[0][6].startswith("in 15m") and head[0][7] == WAITING_GPU
    assert head[1][6] == "unknown" and head[1][7] == HELD_UNKNOWN
    assert head[2][7] == BEHIND_UNKNOWN
    screenshots(browser, tmp_path / "output", "cluster")
    assert script_errors(browser) == []


def test_the_cluster_page_polls_with_the_etag_and_gets_304s_while_nothing_changes(
    live_server, browser
):
    record(live_server)
    open_page(browser, live_server, "#/cluster")
    wait_for(browser, lambda b: "2 nodes" in css(b, "#cluster-capacity")[0].text, "the capacity")

    def answers(b) -> list[int]:
        return b.execute_script(
            "return performance.getEntriesByType('resource')"
            ".filter(e => new URL(e.name).pathname === '/v1/cluster').map(e => e.responseStatus)"
        )

    wait_for(browser, lambda b: answers(b).count(304) >= 1, "a 304 answer to a poll")
    assert answers(browser)[0] == 200
    with database_session(live_server) as session:
        add_job(session, user_ids(session)["bob"], name="new-job", gpus=1)
    wait_for(browser, lambda b: "new-job" in b.page_source, "the queued job after the 304")
    assert script_errors(browser) == []
