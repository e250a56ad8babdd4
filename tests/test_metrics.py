"""Streaming metrics accumulate over a whole epoch of several batches."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from exceedance.metrics import (
    BaseLossPart,
    ExceedanceCount,
    ExceedanceRate,
    PenaltyPart,
    WithinTolerance,
    quality_metric,
)


def batches(array, size):
    return [array[i : i + size] for i in range(0, len(array), size)]


def test_exceedance_streams_over_batches_like_numpy():
    rng = np.random.default_rng(0)
    y_pred = rng.normal(1.0, 0.5, size=(103, 3)).astype("float32")
    y_pred[0, 0] = 1.2  # exactly at the limit does not count
    count, rate = ExceedanceCount(1.2), ExceedanceRate(1.2)
    for chunk in batches(y_pred, 10):
        count.update_state(chunk, chunk)
        rate.update_state(chunk, chunk)
    expected = int((y_pred > 1.2).sum())
    assert float(count.result()) == expected
    assert float(rate.result()) == pytest.approx(expected / y_pred.size)
    count.reset_state()
    assert float(count.result()) == 0.0


def test_epoch_metrics_in_fit_equal_numpy_on_the_final_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 4)).astype("float32")
    y = rng.normal(size=(90, 2)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss="mse",
        metrics=[ExceedanceCount(0.3), ExceedanceRate(0.3), WithinTolerance(0.5)],
    )
    logs = model.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    pred = model.predict(x, verbose=0)
    assert logs["exceedance_count"] == int((pred > 0.3).sum())
    assert logs["exceedance_rate"] == pytest.approx((pred > 0.3).mean(), abs=1e-6)
    assert logs["within_tolerance"] == pytest.approx((np.abs(pred - y) <= 0.5).mean(), abs=1e-6)


def test_loss_parts_report_base_and_penalty():
    y_true = np.zeros((4, 2), dtype="float32")
    y_pred = np.array([[2.0, 0.0]] * 4, dtype="float32")
    base, part = BaseLossPart("mse"), PenaltyPart("l2", threshold=1.0)
    base.update_state(y_true, y_pred)
    part.update_state(y_true, y_pred)
    assert float(base.result()) == pytest.approx(2.0)
    assert float(part.result()) == pytest.approx(0.5)


def test_metrics_serialize():
    for metric in (ExceedanceRate(0.7), PenaltyPart("sigmoid_count", 0.5, {"temperature": 0.05}), WithinTolerance(0.1)):
        clone = metric.__class__.from_config(metric.get_config())
        assert clone.get_config() == metric.get_config()


def test_an_unknown_quality_metric_raises_instead_of_becoming_mse():
    with pytest.raises(ValueError, match="unknown quality metric 'r2'"):
        quality_metric("r2", 0.25)
