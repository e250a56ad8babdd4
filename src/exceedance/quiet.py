"""What reaches the user's terminal: our own lines, not the libraries' start-up chatter.

TensorFlow's native code writes its absl/oneDNN start-up lines straight to file descriptor 2
while it loads (before absl's logging is set up, so `TF_CPP_MIN_LOG_LEVEL` does not reach them),
and MLflow logs its store's table creation and model registration at INFO. Both are held back
unless the user asks for them with `-v` or `EXCEEDANCE_VERBOSE=1`; anything else TensorFlow
writes while loading (an error, a warning we do not know) still reaches the terminal.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager

VERBOSE_ENV = "EXCEEDANCE_VERBOSE"
# Lines TensorFlow's native code prints on every start, whatever the user's setup.
START_UP_LINES = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "cpu_feature_guard.cc",
    "rebuild TensorFlow with the appropriate compiler flags",
)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def take_verbose_flag(argv: list[str]) -> list[str]:
    """Take `-v`/`--verbose` out of a command's arguments and remember it in the environment,
    which the command's child processes (recording process, multirun jobs) inherit."""
    kept = [arg for arg in argv if arg not in ("-v", "--verbose")]
    if len(kept) != len(argv):
        os.environ[VERBOSE_ENV] = "1"
    return kept


def quiet_libraries(verbose_flag: bool = False) -> None:
    """Library logging for a command and its children (which inherit the environment): MLflow at
    WARNING and TensorFlow's C++ logging at errors, unless `verbose_flag` (`-v`) or
    `EXCEEDANCE_VERBOSE=1` asks for everything, or the user set those variables."""
    if verbose_flag:
        os.environ[VERBOSE_ENV] = "1"
    if verbose():
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextmanager
def native_start_up_lines_held():
    """Run the body (an import of TensorFlow) with file descriptor 2 read through a filter that
    drops TensorFlow's known start-up lines and passes every other line on when the body ends."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    chunks: list[bytes] = []

    def drain() -> None:
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)  # a full pipe must never block the import
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer is gone: the reader sees its end
        os.close(saved)
        reader.join(timeout=10)
        os.close(read_end)
        text = b"".join(chunks).decode(errors="replace")
        kept = [line for line in text.splitlines(keepends=True) if not any(s in line for s in START_UP_LINES)]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def import_tensorflow() -> None:
    """Import TensorFlow and Keras once, without their start-up lines (see the module's doc)."""
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return
    with native_start_up_lines_held():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
