"""The experiment's `front` run: its joint Pareto front across every search and job, in MLflow.

One run per experiment (named `front`, tagged `exceedance.role=front`) holds the front of each
group of comparable trials (one data set, quality metric and evaluation limit): a table
(`front.csv`), a figure (`front.png`), an interactive page (`front.html`) and a description
with a link to each front trial's run. A search refreshes it when it ends; `exceedance-pick`
refreshes it with its rule and its pick. Runs in the recording process or the pick.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exceedance import front_page, names, pareto, plots
from exceedance.config import QUALITY_DIRECTIONS
from exceedance.recording.client import store_lock
from exceedance.recording.experiment import Experiment
from exceedance.recording.reader import open_trial_store

NOTE_CHARS = 7000  # the description's table stops before MLflow's cap on a tag's length
# The front table's columns, after the trial's label: where it came from, what it tried, its scores.
COLUMNS = ["job", "search", "trial_id", *names.SEARCHED, "quality", "exceedance_rate", "test_exceedance_rate"]


@dataclass
class Pick:
    """What `exceedance-pick` adds to the front: its rule as a line, and the trial it picked."""

    description: str
    line: tuple[str, float] | None  # ("max_exceedance", E) or ("min_quality", Q); None for the knee
    run_id: str


def trial_label(job: str, trial_id: str) -> str:
    """`03`, or `1/03` for job 1's trial 03: trial ids repeat across a multirun's jobs."""
    return f"{job}/{trial_id}" if job else trial_id


def joint_rows(experiment: Experiment) -> dict[tuple[str, str, str], list[dict]]:
    """Every finished trial as a row, by comparable group (data, quality, limit), its front marked."""
    searches = experiment.searches()
    grouped: dict[tuple[str, str, str], list[pareto.FinishedTrial]] = defaultdict(list)
    parent_of = {}
    # The fast reader (a few columns per run), not MLflow's client: a pick refreshes this too.
    for trial, parent in open_trial_store(experiment.uri).finished_trials(experiment.experiment_id):
        params = trial.params
        grouped[(params.get(names.DATA, ""), params.get(names.QUALITY, ""), params.get(names.LIMIT, ""))].append(trial)
        parent_of[trial.run_id] = parent
    groups = {}
    for key, trials in sorted(grouped.items()):
        direction = QUALITY_DIRECTIONS.get(key[1], "max")
        mask = pareto.front_mask(
            np.array([t.quality for t in trials]), np.array([t.exceedance_rate for t in trials]), direction
        )
        rows = pareto.table(trials, mask, names.SEARCHED, direction)
        by_run = {t.run_id: t for t in trials}
        for row in rows:
            row.update(
                search=searches.get(parent_of[row["run_id"]], ""),
                label=trial_label(row["job"], str(row["trial_id"])),
                test_exceedance_rate=by_run[row["run_id"]].test_exceedance_rate,
            )
        groups[key] = rows
    return groups


def publish(experiment: Experiment, pick: Pick | None = None, copy_to: Path | None = None) -> list[dict]:
    """Refresh the experiment's `front` run; return the joint front's rows (every group's).
    `copy_to`: a folder that gets a copy of the page (opened on its own, its links work)."""
    groups = joint_rows(experiment)
    run_id = experiment.front_run()
    titles = {key: f"{experiment.name}: {key[0]} data, limit {front_page.cell(key[2])}" for key in groups}
    pages = [front_page.Group(titles[key], key[1], rows) for key, rows in groups.items()]
    page = front_page.render(
        f"{experiment.name}: joint Pareto front", pages, COLUMNS, experiment.experiment_id, experiment.ui_url()
    )
    front = [
        {"label": r["label"], **{c: r[c] for c in COLUMNS}, "limit": key[2], "run_id": r["run_id"]}
        for key, rows in groups.items()
        for r in rows
        if r["pareto"]
    ]
    experiment.log_table(run_id, front, names.JOINT_TABLE)
    experiment.log_text(run_id, page, names.JOINT_PAGE)
    if copy_to is not None:
        (copy_to / names.JOINT_PAGE).write_text(page)
    if groups:
        experiment.log_figure(run_id, _figure(groups, titles, pick), names.JOINT_FIGURE)
    experiment.log_batch(
        run_id,
        [(names.FRONT_SIZE, len(front), 0), (names.FINISHED_TRIALS, sum(map(len, groups.values())), 0)],
        tags={names.NOTE: _note(experiment, front, pick)},
    )
    return front


def _figure(groups: dict, titles: dict, pick: Pick | None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5 * len(groups), 4.4))
    axes = np.atleast_1d(fig.subplots(1, len(groups), gridspec_kw={**plots.MARGINS, "wspace": 0.25}))
    for ax, (key, rows) in zip(axes, groups.items(), strict=True):
        picked = next((i for i, r in enumerate(rows) if pick and r["run_id"] == pick.run_id), None)
        plots.pareto_front(
            np.array([r["quality"] for r in rows], dtype=float),
            np.array([r["exceedance_rate"] for r in rows], dtype=float),
            [r[names.FORM] for r in rows],
            np.array([r["pareto"] for r in rows]),
            key[1],
            picked=picked,
            title=titles[key],
            labels=[r["label"] for r in rows],
            rule=pick.line if pick and picked is not None else None,
            ax=ax,
        )
    return fig


def _note(experiment: Experiment, front: list[dict], pick: Pick | None) -> str:
    """The front run's description: a Markdown table whose trial ids link to their runs."""
    lines = [
        f"Joint Pareto front of experiment **{experiment.name}**: {len(front)} trials, every search and job "
        "(quality and exceedance rate on the validation rows; exceedance against each trial's limit).",
        "",
    ]
    if pick is not None:
        lines += [f"Picked by `exceedance-pick` ({pick.description}): run `{pick.run_id}`.", ""]
    columns = ["trial", "search", *names.SEARCHED, "quality", "exceedance_rate", "limit"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for shown, row in enumerate(front):
        if sum(len(line) + 1 for line in lines) > NOTE_CHARS:  # MLflow caps a tag's value at 8,000 characters
            lines.append(f"\n... and {len(front) - shown} more trials: see front.csv")
            break
        page = f"#/experiments/{experiment.experiment_id}/runs/{row['run_id']}?workflowType=machine_learning"
        link = f"[{row['label']}]({page})"
        cells = [link, row["search"], *(front_page.cell(row[c]) for c in columns[2:])]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def publish_locked(experiment: Experiment, pick: Pick | None = None, copy_to: Path | None = None) -> list[dict]:
    """`publish`, one process at a time on a SQLite store (two jobs ending together)."""
    with store_lock(experiment.uri):
        return publish(experiment, pick, copy_to)
