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


# scheme://user:password@host -> scheme://***@host, wherever it appears in a text.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/@\s'\"]+)@")


def redact(text: str) -> str:
    """`text` with the user-info (user name and password) of every URL in it replaced by `***`.

    Example:
        `redact("postgresql://me:pw@db/mlflow")` is ``"postgresql://***@db/mlflow"``.
    """
    return _USERINFO.sub(r"\g<scheme>***@", text)


def has_userinfo(text: str) -> bool:
    """Whether `text` holds a URL with a user name or password."""
    return _USERINFO.search(text) is not None
