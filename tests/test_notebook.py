"""The notebook runs end to end against a store made by a tiny sweep, and agrees with the command."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import compose_config
from exceedance.cli.pick import main as pick_main
from exceedance.run_search import run

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "pick_pareto.ipynb"


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_notebook_picks_what_the_command_picks(tmp_path, tiny, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    # No sigmoid_count trial, so no run has a temperature: the notebook must not expect one.
    run(compose_config([*tiny, "name=nb", "search.max_trials=3", "penalty=l2"]), report=lambda _: None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("EXCEEDANCE_EXPERIMENT", "nb")
    monkeypatch.setenv("EXCEEDANCE_MAX_EXCEEDANCE", "1.0")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    text = "\n".join(
        output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "3 finished trials in 'nb'" in text
    assert any("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))
    pick_main(["nb", "--max-exceedance", "1.0", "--tracking-uri", uri, "--out", str(tmp_path / "out")])
    picked_run = next(line.split()[-1] for line in capsys.readouterr().out.splitlines() if line.startswith(" * "))
    # The notebook prints the exported config, whose header names the picked run.
    assert f"(MLflow run {picked_run})" in text
