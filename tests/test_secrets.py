"""Secrets in every form a driver accepts are masked in every line, and kept out of Hydra.

Known answers for `redact` over the forms SQLAlchemy and psycopg accept (a raw `/`, `?`, `:` or
`@` in the password, a percent-encoded one, a password or token in the query, a URI with no
user-info at all), checked against SQLAlchemy's own parser: what it reads as a password in the
masked text is the mask. The command-line tests against a real PostgreSQL and MLflow server are
in tests/test_postgres.py.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from exceedance.cli.guard import keep_secrets_from_hydra, refuse_secrets
from exceedance.errors import ConfigError, has_credentials, redact

SECRET = "Zk9/q2Vw?x:y@Ma7e"  # what a base64 or generated secret may hold, raw

FORMS = {
    "raw slash": ("postgresql://me:Zk9/q2Vw/Ma7e@db:5432/mlflow", "postgresql://me:***@db:5432/mlflow"),
    "raw question mark": ("postgresql://me:Zk9?q2Vw@db/mlflow", "postgresql://me:***@db/mlflow"),
    "raw at sign": ("postgresql://me:Zk9@q2Vw@db/mlflow", "postgresql://me:***@db/mlflow"),
    "every character": (f"postgresql+psycopg://me:{SECRET}@db/mlflow", "postgresql+psycopg://me:***@db/mlflow"),
    "percent-encoded": ("mysql://me:Zk9%2Fq2Vw%40@db/mlflow", "mysql://me:***@db/mlflow"),
    "query password": (
        "postgresql://me@db/mlflow?password=Zk9/q2Vw&sslmode=require",
        "postgresql://me@db/mlflow?password=***&sslmode=require",
    ),
    "query only": (
        "postgresql:///mlflow?host=db&user=me&password=Zk9/q2Vw",
        "postgresql:///mlflow?host=db&user=me&password=***",
    ),
    "query pwd and sslpassword": (
        "postgresql://db/m?pwd=Zk9q2Vw&sslpassword=Zk9q2Vw",
        "postgresql://db/m?pwd=***&sslpassword=***",
    ),
    "query token": ("https://mlflow.example/?access_token=Zk9q2Vw", "https://mlflow.example/?access_token=***"),
    "http basic": ("http://me:Zk9q2Vw@127.0.0.1:5000", "http://me:***@127.0.0.1:5000"),
    "http lone token": ("https://Zk9q2Vw@mlflow.example", "https://***@mlflow.example"),
}


@pytest.mark.parametrize("uri, masked", FORMS.values(), ids=FORMS.keys())
def test_every_form_of_a_secret_is_masked_in_a_line(uri, masked):
    line = f"search stopped: recording to {uri}; rerun ('{uri}') to resume"
    assert redact(line) == f"search stopped: recording to {masked}; rerun ('{masked}') to resume"
    assert "Zk9" not in redact(line) and "q2Vw" not in redact(line)
    assert has_credentials(uri)


@pytest.mark.parametrize("uri", [u for u, _ in FORMS.values() if not u.startswith("http")])
def test_the_drivers_parser_reads_only_the_mask_as_the_password(uri):
    url = make_url(redact(uri))
    assert url.password in (None, "***")
    assert all(url.query[key] == "***" for key in {"password", "pwd", "sslpassword"} & set(url.query))
    if uri.count("@") < 2:  # a raw `@` in the password: SQLAlchemy itself reads part of it as the host
        assert make_url(uri).host == url.host and make_url(uri).database == url.database


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:////home/you/mlruns/mlflow.db",
        "postgresql://me@db:5432/mlflow?sslmode=require",
        "http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning",
        "mlflow ui --backend-store-uri sqlite:////tmp/a b.db --port 5000",
        "trial 3: l1 threshold=0.653 lam=0.739",
    ],
)
def test_what_holds_no_secret_is_left_as_it_is(text):
    assert redact(text) == text and not has_credentials(text)


def test_a_credentialed_tracking_uri_leaves_the_overrides_for_the_environment(monkeypatch):
    import os

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # put back as it was after the test, however it was set
    uri = "postgresql:///mlflow?host=db&user=me&password=Zk9/q2Vw"
    kept = keep_secrets_from_hydra(["name=x", f"tracking.uri='{uri}'"])
    assert kept == ["name=x"]
    assert os.environ["MLFLOW_TRACKING_URI"] == uri


def test_a_secret_in_another_override_is_refused_masked():
    with pytest.raises(ConfigError) as refused:
        keep_secrets_from_hydra(["data.path=https://me:Zk9/q2Vw@files.example/load.csv"])
    assert str(refused.value) == (
        "data.path: 'https://me:***@files.example/load.csv' holds a password; only tracking.uri may carry credentials"
    )


def test_a_secret_in_a_config_file_is_refused_by_its_key():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"name": "x", "tracking": {"uri": "postgresql://me@db/m?password=Zk9/q2Vw"}})
    with pytest.raises(ConfigError, match=r"^tracking.uri: 'postgresql://me@db/m\?password=\*\*\*' holds a password"):
        refuse_secrets(cfg)
    refuse_secrets(OmegaConf.create({"tracking": {"uri": "${oc.env:MY_STORE}"}}))  # read at run time: allowed
