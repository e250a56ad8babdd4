"""The penalized loss against NumPy, including the seed articles' numbers and the gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from exceedance.losses import PenalizedLoss, penalty

SEED_PRED = np.array([[0.8, 2.5, 0.2, 1.2, 3.5]], dtype="float32")


def numpy_penalty(y_pred, threshold, form, temperature=0.1):
    excess = y_pred - threshold
    if form == "l1":
        values = np.maximum(excess, 0)
    elif form == "l2":
        values = np.maximum(excess, 0) ** 2
    else:
        values = 1 / (1 + np.exp(-excess / temperature))
    return values.mean(axis=-1)


def test_seed_numbers_l1_and_l2():
    n = SEED_PRED.shape[1]
    assert float(penalty(SEED_PRED, 1.0, "l1")[0]) * n == pytest.approx(4.2, rel=1e-6)
    assert float(penalty(SEED_PRED, 1.0, "l2")[0]) * n == pytest.approx(8.54, rel=1e-6)


@pytest.mark.parametrize("form", ["l1", "l2", "sigmoid_count"])
def test_penalty_matches_numpy(form):
    rng = np.random.default_rng(0)
    y_pred = rng.normal(1.0, 1.0, size=(32, 4)).astype("float32")
    y_pred[0, :] = 0.7  # exactly at the threshold
    extras = {"temperature": 0.05} if form == "sigmoid_count" else {}
    got = np.asarray(penalty(y_pred, 0.7, form, **extras))
    np.testing.assert_allclose(got, numpy_penalty(y_pred, 0.7, form, 0.05), rtol=1e-5, atol=1e-6)
    if form != "sigmoid_count":
        assert got[0] == 0.0


@pytest.mark.parametrize("form", ["l1", "l2"])
def test_all_below_threshold_costs_nothing(form):
    y = np.full((8, 3), 0.2, dtype="float32")
    loss = PenalizedLoss("mse", form, threshold=1.0, lam=5.0)
    assert float(loss(y, y)) == 0.0


@pytest.mark.parametrize("form", ["l1", "l2", "sigmoid_count"])
def test_loss_is_base_plus_weighted_penalty(form):
    rng = np.random.default_rng(1)
    y_true = rng.normal(size=(16, 2)).astype("float32")
    y_pred = rng.normal(1.0, size=(16, 2)).astype("float32")
    extras = {"temperature": 0.2} if form == "sigmoid_count" else {}
    loss = PenalizedLoss("mse", form, threshold=0.9, lam=0.3, extras=extras)
    expected = ((y_true - y_pred) ** 2).mean(axis=-1) + 0.3 * numpy_penalty(y_pred, 0.9, form, 0.2)
    assert float(loss(y_true, y_pred)) == pytest.approx(expected.mean(), rel=1e-5)


def test_binary_crossentropy_base():
    y_true = np.array([[1.0], [0.0]], dtype="float32")
    y_pred = np.array([[0.97], [0.2]], dtype="float32")
    loss = PenalizedLoss("binary_crossentropy", "l1", threshold=0.9, lam=2.0)
    bce = -(np.log(0.97) + np.log(0.8)) / 2
    assert float(loss(y_true, y_pred)) == pytest.approx(bce + 2.0 * 0.07 / 2, rel=1e-4)


def gradient(fn, y_pred):
    y = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(fn(y))
    return tape.gradient(value, y)


def test_sigmoid_count_has_gradient_near_threshold_and_hard_count_has_none():
    near = np.array([[0.95, 1.02, 1.1]], dtype="float32")
    soft = gradient(lambda y: penalty(y, 1.0, "sigmoid_count", temperature=0.1), near).numpy()
    assert np.all(soft > 0), "pushing a prediction up must raise the soft count"
    hard = gradient(lambda y: tf.reduce_sum(tf.cast(y > 1.0, "float32")), near)
    # The hard count is a step: its gradient is None (no path) or zero everywhere -- which is
    # why it is offered only as a metric and never as a training penalty.
    assert hard is None or not np.any(hard.numpy())


@pytest.mark.parametrize("form", ["l1", "l2"])
def test_gradient_pushes_only_exceeding_elements_down(form):
    g = gradient(lambda y: penalty(y, 1.0, form), SEED_PRED.copy()).numpy()[0]
    above = SEED_PRED[0] > 1.0
    assert np.all(g[above] > 0) and np.all(g[~above] == 0)


def test_loss_roundtrips_with_a_saved_model(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    loss = PenalizedLoss("mse", "sigmoid_count", threshold=0.8, lam=0.4, extras={"temperature": 0.07})
    model.compile(optimizer="adam", loss=loss)
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.models.load_model(path).loss
    assert isinstance(restored, PenalizedLoss)
    assert restored.get_config() == loss.get_config()
