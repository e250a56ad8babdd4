"""What a search's trials and the retrain of a picked trial share: threads, seeds, `fit`, divergence.

Imports TensorFlow and Keras: only the commands that train load this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from exceedance.config import SearchConfig
from exceedance.errors import ConfigError


def use_threads(search: SearchConfig) -> None:
    """Size TensorFlow's thread pools from the config; must run before TensorFlow runs an op."""
    import tensorflow as tf

    try:
        if search.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(search.intra_op_threads)
        if search.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(search.inter_op_threads)
    except RuntimeError:
        raise ConfigError(
            "search.intra_op_threads / search.inter_op_threads: TensorFlow already runs in this process "
            "with other thread settings; set them before the first search of the process"
        ) from None


def divergence(final: dict[str, float]) -> str | None:
    """Why training must count as failed (a non-finite final metric), or None if it did not."""
    if all(math.isfinite(v) for v in final.values()):
        return None
    return f"training diverged: loss={final.get('loss')}"


class EpochLogger(keras.callbacks.Callback):
    """Hands every epoch's metrics to `log(metrics, step)`, the step counted from 1."""

    def __init__(self, log: Callable[[dict[str, float], int], None]):
        super().__init__()
        self.log = log

    def on_epoch_end(self, epoch, logs=None):
        self.log(dict(logs or {}), epoch + 1)


@dataclass
class Fitted:
    """What `fit` leaves: the final epoch's metrics, how many epochs ran, and whether it diverged."""

    final: dict[str, float]
    epochs: int
    diverged: str | None


def fit(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    on_epoch: Callable[[dict[str, float], int], None],
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: list[keras.callbacks.Callback] = (),
) -> Fitted:
    """Train `model` quietly, handing each epoch's metrics to `on_epoch(metrics, step)`; stop at
    the first non-finite loss.

    Returns:
        A `Fitted`; `diverged` says why the training must count as failed, or is None.
    """
    history = model.fit(
        x,
        y,
        validation_data=validation,
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        # The given callbacks first: what they add to an epoch's logs (a learned `lam`) is logged.
        callbacks=[*callbacks, EpochLogger(on_epoch), keras.callbacks.TerminateOnNaN()],
    )
    final = {k: v[-1] for k, v in history.history.items()}
    return Fitted(final, len(history.history.get("loss", [])), divergence(final))
