"""The package's exceptions, and the one function every message that may hold a URI goes through.

Cheap to import (no TensorFlow, no MLflow): the command-line layer catches these without loading
the search's modules.
"""

from __future__ import annotations

import re


class ConfigError(ValueError):
    """Input that cannot work (a config value, a file, a store); the message names it and says what
    is allowed."""


class SearchStopped(RuntimeError):
    """The search cannot usefully go on (e.g. every recent trial diverged); the message says why."""


class TrackingLost(SearchStopped):
    """The MLflow store or server stopped taking records mid-search; a rerun resumes."""


# A URL in free text: a scheme, then anything up to whitespace or a quote. A password may hold a
# raw `/`, `?`, `:` or even `@` (SQLAlchemy and psycopg accept the first three), so the URL is not
# cut at them.
_URL = re.compile(r"\b(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>[^\s'\"<>]*)")
# Query keys whose values are secrets: password, passwd, pwd, sslpassword, token, access_token,
# api_key, secret, client_secret, auth, credentials, sig, signature, ...
_SECRET_KEY = re.compile(r"pass|pwd|token|secret|key|auth|cred|sig", re.IGNORECASE)
MASK = "***"


def redact(text: str) -> str:
    """`text` with the secrets of every URL in it replaced by `***`: the password of its user-info
    (the user name stays, but an http(s) URL's lone user-info, often a token, goes too) and every
    query value whose key names a secret (`password=`, `pwd=`, `token=`, `api_key=`, ...).

    Example:
        `redact("postgresql://me:pw@db/mlflow?sslpassword=x")` is
        ``"postgresql://me:***@db/mlflow?sslpassword=***"``.
    """
    return _URL.sub(_mask_match, text)


def _mask_match(match: re.Match) -> str:
    # A sentence's punctuation after a URL ("... at URL; rerun") is not part of it.
    rest = match["rest"].rstrip(".,;:)]}")
    return _mask_url(match["scheme"], rest) + match["rest"][len(rest) :]


def has_credentials(text: str) -> bool:
    """Whether `text` holds a URL with a password, a token or another secret in it."""
    return redact(text) != text


def _mask_url(scheme: str, rest: str) -> str:
    # Everything before the last `@` is user-info: more than a driver would take as the password
    # when a query value holds an `@` too, never less.
    userinfo, at, host = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        if colon and not {"/", "?", "#"} & set(user):
            userinfo = f"{user}:{MASK}"
        elif colon or scheme.lower() in ("http", "https"):
            userinfo = MASK
        rest = f"{userinfo}@{host}"
    path, question, query = rest.partition("?")
    if question:
        rest = f"{path}?{_mask_query(query)}"
    masked = f"{scheme}://{rest}"
    return masked if _holds_no_secret(masked) else f"{scheme}://{MASK}"


def _mask_query(query: str) -> str:
    from urllib.parse import unquote_plus

    def mask(pair: str) -> str:
        key, equals, value = pair.partition("=")
        return f"{key}={MASK}" if equals and value and _SECRET_KEY.search(unquote_plus(key)) else pair

    return re.sub(r"[^&;]+", lambda match: mask(match[0]), query)


def _holds_no_secret(masked: str) -> bool:
    """What the drivers' own parser (SQLAlchemy's, which MLflow's SQL stores and psycopg go
    through) reads as a password or a secret query value in the masked URL is the mask."""
    try:
        from sqlalchemy.engine import make_url

        url = make_url(masked)
    except Exception:  # not a URL SQLAlchemy reads (http, a fragment of text): the rules above hold
        return True
    values = [value for key, value in url.query.items() if _SECRET_KEY.search(key)]
    flat = [v for value in values for v in ((value,) if isinstance(value, str) else value)]
    return url.password in (None, MASK) and all(v == MASK for v in flat)
