"""`exceedance-pick`: choose a Pareto-optimal trial of an experiment by a rule (no TensorFlow)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from exceedance.cli.errors import exit_on_user_error
from exceedance.cli.table import cell, front_line
from exceedance.config import TrackingConfig, safe_name
from exceedance.errors import has_credentials, redact
from exceedance.pick import PickResult, Rule, run_pick
from exceedance.signals import end_like_ctrl_c
from exceedance.stores import resolve_uri

COMMAND = "exceedance-pick"
DEFAULT_PICK_RATE = 0.01  # the rule the sweep's "Next:" line suggests when the searches set no cap


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    p.add_argument("experiment", help="MLflow experiment name (the sweep's `name`)")
    # No rule: the cap the experiment's searches set (search.max_exceedance), if they all set one.
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--max-exceedance", type=float, metavar="E", help="best quality with exceedance rate <= E")
    rule.add_argument("--min-quality", type=float, metavar="Q", help="least exceedance with quality >= Q")
    rule.add_argument("--knee", action="store_true", help="the knee of the Pareto front")
    p.add_argument(
        "--limit", type=float, default=None, help="pick among trials of this evaluation limit (a sweep over limits)"
    )
    p.add_argument("--tracking-uri", default="", help="default: MLFLOW_TRACKING_URI, else sqlite under ./mlruns")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write pareto.png and picked.yaml (default: mlruns/picks/EXPERIMENT)",
    )
    return p


def format_table(result: PickResult) -> str:
    """The front, each validation rate with its upper bound and the test rate beside it (`!`:
    the test rate is above the bound)."""
    jobs = any(row["job"] for row in result.rows)  # a multirun's: trial ids repeat across its jobs
    job = (lambda row: f"{'job' if row is None else row['job']:>4}") if jobs else (lambda row: "")
    lines = [f"   {job(None)}{front_line(None)}  {'bound95':>8}  {'test_rate':>9}   run_id"]
    for row in result.rows:
        mark = " * " if row["run_id"] == result.picked["run_id"] else "   "
        flag = "!" if row["test_outside_bound"] else " "
        scores = f"{cell(row['rate_bound']):>8}  {cell(row['test_exceedance_rate']):>9} {flag}"
        lines.append(f"{mark}{job(row)}{front_line(row)}  {scores}  {row['run_id']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    end_like_ctrl_c()
    args = parser().parse_args(argv)
    rule = Rule(args.max_exceedance, args.min_quality, args.knee)
    tracking = TrackingConfig(uri=args.tracking_uri)
    result, png, exported = exit_on_user_error(COMMAND, _pick, tracking, args, rule)
    print(
        f"Pareto front of {args.experiment!r} ({len(result.records)} finished trials; quality = "
        f"validation {result.quality_name}); * = picked by rule: {result.rule.describe()}; bound95 = 95 % upper "
        "bound on the exceedance rate of new rows; ! = the test rate (never used to choose) is above it"
    )
    print(format_table(result))
    print(f"\nPlot: {png}\nConfig: {exported}\nRetrain and register it: {next_command(exported, result.tracking_uri)}")


def _pick(tracking: TrackingConfig, args: argparse.Namespace, rule: Rule):
    out = args.out or Path("mlruns") / "picks" / safe_name(args.experiment, "experiment")
    return run_pick(tracking, args.experiment, rule, out, args.limit)


def next_command(exported: Path, uri: str) -> str:
    """`exceedance-train` on the exported config, into the store the pick read (the exported
    config leaves the tracking URI out: it can hold credentials)."""
    return next_store(f"exceedance-train {exported}", uri, "tracking.uri=")


def next_store(command: str, uri: str, option: str = "--tracking-uri ") -> str:
    """`command` pointed at the store `uri` unless it is the default one (`./mlruns`), credentials
    left out. A store that came in `MLFLOW_TRACKING_URI` (where the sweep puts a credentialed
    `tracking.uri=`) is named too: the user's next shell may not have that variable."""
    if uri == resolve_uri(TrackingConfig()) and not os.environ.get("MLFLOW_TRACKING_URI"):
        return command
    if has_credentials(uri):
        return f"MLFLOW_TRACKING_URI='{redact(uri)}' {command}  (your credentials in place of ***)"
    return f"{command} {option}{uri}"


if __name__ == "__main__":
    sys.exit(main())
