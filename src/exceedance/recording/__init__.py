"""Everything MLflow-shaped: what a search records, how it gets there, and how it is read back.

- `events`: what the trial loop tells the recording side (small dataclasses, no MLflow);
- `process`: the recording process and the training side's handle on it (`Recorder`), or a
  sink that drops every event (`Discard`);
- `search`: the recording side of one search: trial id -> run id, batching, the Pareto front;
- `experiment`: one MLflow experiment through MLflow's client (runs, metrics, artifacts);
- `reader`: fast reads of an experiment's finished trials (SQL or REST, no mlflow import).

The names written (tags, params, metric keys, files) are in `exceedance.names`.
"""
