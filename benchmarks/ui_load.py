"""How long the MLflow UI takes to show a big experiment, in a real browser.

Runs the default search with `--trials` trials (500) into a throw-away store, then the pick
(which refreshes the `front` run), starts `mlflow ui` on it and, in a fresh Chromium profile
each time (Debian's `chromium`, driven by Playwright), times what a user waits for:
- the runs page, from following the sweep's printed link until the search's row is shown;
- expanding the search until its newest trial's row is shown (MLflow loads nested runs 100 at
  a time: the first page);
- the `tags.pareto = 'true'` filter, from pressing Enter until the count of matching runs shows;
- the `front` run's artifact view until its figure has loaded.

Prints the medians over `--repeats` (3) and one JSON line.

    python benchmarks/ui_load.py [--trials 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow import MlflowClient

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def serve(cwd: Path, port: int) -> subprocess.Popen:
    uri = f"sqlite:///{cwd}/mlruns/mlflow.db"
    server = subprocess.Popen(
        ["mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    for _ in range(180):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    raise SystemExit("mlflow ui did not start")


def measure(browser, base: str, link: str, client: MlflowClient) -> dict[str, float]:
    experiment = client.get_experiment_by_name("exceedance")
    runs = client.search_runs([experiment.experiment_id], "tags.`exceedance.role` != 'trial'")
    parent = next(r for r in runs if r.data.tags["exceedance.role"] == "search")
    front = next(r for r in runs if r.data.tags["exceedance.role"] == "front")
    newest = client.search_runs(
        [experiment.experiment_id], "tags.`exceedance.role` = 'trial'", order_by=["attributes.start_time DESC"]
    )[0]
    on_front = len(client.search_runs([experiment.experiment_id], "tags.pareto = 'true'"))
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(120_000)
    page = context.new_page()
    times = {}
    start = time.perf_counter()
    page.goto(link)
    page.get_by_text(parent.info.run_name, exact=True).wait_for()
    times["runs page"] = time.perf_counter() - start
    start = time.perf_counter()
    page.locator("[role=row]", has_text=parent.info.run_name).locator("button").first.click()
    page.get_by_text(newest.info.run_name, exact=True).first.wait_for()
    times["expand the search"] = time.perf_counter() - start
    search = page.get_by_placeholder('metrics.rmse < 1 and params.model = "tree"')
    search.fill("tags.pareto = 'true'")
    start = time.perf_counter()
    search.press("Enter")
    page.get_by_text(f"{on_front + 1} matching runs").wait_for()
    times["pareto filter"] = time.perf_counter() - start
    start = time.perf_counter()
    page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs/{front.info.run_id}/artifacts/front.png")
    page.wait_for_function("() => [...document.images].some(i => i.complete && i.naturalWidth >= 600)")
    times["front figure"] = time.perf_counter() - start
    context.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "exceedance.cli.sweep", f"search.max_trials={args.trials}"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        )
        swept = time.perf_counter() - started
        subprocess.run(
            [sys.executable, "-m", "exceedance.cli.pick", "exceedance", "--knee"],
            cwd=cwd,
            check=True,
            capture_output=True,
        )
        port = 5000 + os.getpid() % 1000
        server = serve(cwd, port)
        base = f"http://127.0.0.1:{port}"
        link = re.search(r"then open (\S+)", done.stdout).group(1).replace("http://127.0.0.1:5000", base)
        client = MlflowClient(f"sqlite:///{cwd}/mlruns/mlflow.db")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                samples = [measure(browser, base, link, client) for _ in range(args.repeats)]
                browser.close()
        finally:
            os.killpg(server.pid, 15)
    medians = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    print(f"{args.trials} trials swept in {swept:.0f} s; medians over {args.repeats} fresh browser profiles:")
    for key, seconds in medians.items():
        print(f"  {key:<20} {seconds:6.2f} s   (each: {', '.join(f'{s[key]:.2f}' for s in samples)})")
    print(json.dumps({"trials": args.trials, "seconds": medians}))


if __name__ == "__main__":
    main()
