"""The MLflow UI as a user sees it, in a real browser (Chromium through Playwright).

A tiny multirun sweep and a pick fill a store; `mlflow ui` serves it on a free 127.0.0.1 port;
a fresh browser profile follows the link the sweep printed and checks what is on the pages.
Screenshots go to the test's temp folder, or to `$EXCEEDANCE_SCREENSHOTS` (how `docs/` is made).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import TINY, free_port, serve_mlflow, stop_process

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
# Chromium as root in a container, with nothing reaching for the network (it is closed here).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000
# The share of a loaded figure's pixels that are drawn on (not white, not transparent).
INKED = """() => {
  const img = [...document.images].find(i => i.naturalWidth >= 600);
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d"); ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let inked = 0;
  for (let k = 0; k < px.length; k += 4) if (px[k + 3] > 0 && px[k] + px[k + 1] + px[k + 2] < 720) inked++;
  return inked / (px.length / 4);
}"""


def _require_browser():
    """CI installs Chromium and Playwright (.ci/run): there a missing one is a failure, not a skip."""
    missing = [
        what for what, ok in (("chromium", Path(CHROMIUM).exists()), ("playwright", _has_playwright())) if not ok
    ]
    if missing and os.environ.get("CI"):
        pytest.fail(f"browser tests need {' and '.join(missing)}; .ci/run installs them")
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install chromium; pip install playwright)")


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A two-job multirun and a pick in one store; the sweep's output."""
    _require_browser()
    cwd = tmp_path_factory.mktemp("ui")
    sweep = [sys.executable, "-m", "exceedance.cli.sweep", "-m", "+sweeps=penalty_forms", "penalty=l1,sigmoid_count"]
    # Tiny trials; the README's pictures come from a fuller sweep of the default data.
    overrides = ["search.max_trials=12"] if os.environ.get("EXCEEDANCE_SCREENSHOTS") else [*TINY, "search.max_trials=3"]
    done = subprocess.run([*sweep, *overrides], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    picked = subprocess.run(
        [sys.executable, "-m", "exceedance.cli.pick", "penalty_forms", "--knee"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert picked.returncode == 0, picked.stderr[-2000:]
    return cwd, done.stdout


@pytest.fixture(scope="module")
def ui(swept):
    """`mlflow ui` on the sweep's store, as the sweep's Browse line says, on a free port."""
    cwd, _ = swept
    port = free_port()
    uri = f"sqlite:///{cwd}/mlruns/mlflow.db"
    server = serve_mlflow(["ui", "--backend-store-uri", uri], port, cwd)
    base = f"http://127.0.0.1:{port}"
    yield base, MlflowClient(uri)
    stop_process(server)


@pytest.fixture(scope="module")
def browser(ui):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh profile: no stored choice of MLflow's view, as for a new user."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("EXCEEDANCE_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def browse_link(stdout: str, base: str) -> str:
    """The runs-view link the sweep printed, on the test's port."""
    link = re.search(r"then open (http://127\.0\.0\.1:5000/\S+)", stdout).group(1)
    return link.replace("http://127.0.0.1:5000", base)


def close_assistant(page) -> None:
    """MLflow's assistant panel opens beside every page; a user closes it once."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def experiment_runs(client: MlflowClient):
    experiment = client.get_experiment_by_name("penalty_forms")
    return experiment.experiment_id, client.search_runs([experiment.experiment_id])


def role(runs, name: str):
    return [r for r in runs if r.data.tags.get("exceedance.role") == name]


def test_the_printed_link_opens_the_runs_with_named_parents_and_nested_trials(swept, ui, page, tmp_path):
    base, client = ui
    _, runs = experiment_runs(client)
    page.goto(browse_link(swept[1], base))
    for parent in role(runs, "search"):
        page.get_by_text(parent.info.run_name, exact=True).wait_for()
    assert {p.info.run_name for p in role(runs, "search")} == {
        "penalty_forms: penalty=l1",
        "penalty_forms: penalty=sigmoid_count",
    }
    assert "/runs" in page.url and "overview" not in page.url
    page.get_by_text("front", exact=True).wait_for()
    assert page.get_by_text("Traces", exact=True).count() <= 1  # the sidebar's link, not the GenAI overview
    # Trials nest under their search: expanding a parent shows its trial-00 .. trial-02.
    row = page.locator("[role=row]", has_text="penalty_forms: penalty=l1")
    row.locator("button").first.click()
    for trial in ("trial-00", "trial-01", "trial-02"):
        page.get_by_text(trial, exact=True).first.wait_for()
    close_assistant(page)
    page.locator(".ag-header-cell[col-id*='Run Name'] .ag-header-cell-resize").dblclick()  # fit the names
    page.screenshot(path=shots(tmp_path) / "runs.png")


def test_the_pareto_filter_shows_exactly_the_joint_front(swept, ui, page):
    base, client = ui
    _, runs = experiment_runs(client)
    front = [r for r in role(runs, "trial") if r.data.tags.get("pareto") == "true"]
    assert front
    parents = {r.data.tags["mlflow.parentRunId"] for r in front}
    page.goto(browse_link(swept[1], base))
    page.get_by_text("front", exact=True).wait_for()
    search = page.get_by_placeholder('metrics.rmse < 1 and params.model = "tree"')
    search.fill("tags.pareto = 'true'")
    search.press("Enter")
    # MLflow counts the matching trials and the parents it shows them under.
    page.get_by_text(f"{len(front) + len(parents)} matching runs").wait_for()
    for parent in parents:
        name = client.get_run(parent).info.run_name
        page.locator("[role=row]", has_text=name).locator("button").first.click()
    page.get_by_text("trial-", exact=False).nth(len(front) - 1).wait_for()
    shown = page.locator("[role=row]", has_text="trial-")
    assert shown.count() == len(front)
    ids = {
        re.search(r"#/experiments/\d+/runs/(\w+)", a).group(1)
        for a in shown.locator("a[href*='/runs/']").evaluate_all("es => es.map(e => e.getAttribute('href'))")
    }
    assert ids == {r.info.run_id for r in front}
    # The front's own table lists the same runs.
    front_run = role(runs, "front")[0]
    table = Path(client.download_artifacts(front_run.info.run_id, "front.csv")).read_text()
    assert sorted(line.split(",")[-1] for line in table.splitlines()[1:]) == sorted(r.info.run_id for r in front)


def test_a_parent_carries_its_summary_metrics(swept, ui, page):
    base, client = ui
    experiment_id, runs = experiment_runs(client)
    parent = next(r for r in role(runs, "search") if r.info.run_name.endswith("penalty=l1"))
    page.goto(f"{base}/#/experiments/{experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning")
    page.get_by_text(parent.info.run_name).first.wait_for()
    metrics = parent.data.metrics
    own = [t for t in role(runs, "trial") if t.data.tags["mlflow.parentRunId"] == parent.info.run_id]
    assert metrics["finished_trials"] == len(own) >= 3
    page.get_by_text("least_val_exceedance_rate", exact=True).wait_for()
    lines = [line.strip() for line in page.inner_text("body").splitlines()]
    summary = ("finished_trials", "front_size", "hypervolume", "best_val_within_tolerance", "least_val_exceedance_rate")
    for key in summary:  # the overview's metrics table: each key, then its value
        assert float(lines[lines.index(key) + 1]) == pytest.approx(metrics[key], rel=1e-6), key


def test_the_front_run_shows_its_figure_and_its_page_lists_the_trials(swept, ui, page, tmp_path):
    base, client = ui
    experiment_id, runs = experiment_runs(client)
    front_run = role(runs, "front")[0]
    labels = [r for r in role(runs, "trial") if r.data.tags.get("pareto") == "true"]
    where = f"{base}/#/experiments/{experiment_id}/runs/{front_run.info.run_id}/artifacts"
    page.goto(f"{where}/front.png?workflowType=machine_learning")
    # The figure (650 px wide) has loaded, and it is a picture, not a blank: a share of its
    # pixels is neither white nor transparent.
    page.wait_for_function("() => [...document.images].some(i => i.complete && i.naturalWidth >= 600)")
    inked = page.evaluate(INKED)
    assert inked > 0.03, inked
    close_assistant(page)
    page.screenshot(path=shots(tmp_path) / "front.png")
    page.get_by_text("front.html", exact=True).click()
    frame = page.frame_locator("iframe").first
    for run in labels:
        label = f"{run.data.tags['exceedance.job']}/{run.data.tags['exceedance.trial_id']}"
        frame.get_by_role("link", name=label, exact=True).wait_for()
    # Hover shows a trial; a click gives its run's link, which opens the run's page.
    first = labels[0]
    point = frame.locator(f"circle[data-run='{first.info.run_id}']")
    point.hover()
    assert first.info.run_id in frame.locator("#tip").inner_text()
    point.click()
    link = frame.locator("#chosen a")
    href = link.get_attribute("href")
    assert href.startswith(base) and first.info.run_id in href
    page.goto(href)
    page.get_by_text(first.info.run_name).first.wait_for()


def test_a_trial_page_shows_the_exceedance_rate_chart(swept, ui, page, tmp_path):
    base, client = ui
    experiment_id, runs = experiment_runs(client)
    trial = role(runs, "trial")[0]
    page.goto(
        f"{base}/#/experiments/{experiment_id}/runs/{trial.info.run_id}/model-metrics?workflowType=machine_learning"
    )
    page.get_by_placeholder("Search metric charts").fill("exceedance_rate")
    page.get_by_text("val_exceedance_rate", exact=True).wait_for()
    # The chart is drawn: its legend names the run and the metric, and it has a curve.
    page.get_by_text(f"{trial.info.run_name} (val_exceedance_rate)").wait_for()
    # Test figures are tags, not one-point charts.
    assert page.get_by_text("test/exceedance_rate").count() == 0
    assert not [k for k in trial.data.metrics if k.startswith("test")]
    close_assistant(page)
    page.screenshot(path=shots(tmp_path) / "trial.png")
