"""Model builders. A builder is any callable `(n_features, n_outputs, **model_fields) -> Model`."""

from __future__ import annotations

import keras


def build_mlp(
    n_features: int,
    n_outputs: int,
    hidden_units: list[int],
    activation: str = "relu",
    output_activation: str = "linear",
    **options,
) -> keras.Model:
    """A plain multilayer perceptron.

    Args:
        n_features: input width.
        n_outputs: output width.
        hidden_units: units per hidden layer.
        activation: hidden-layer activation.
        output_activation: `linear`, or `sigmoid` for outputs bounded in (0, 1).
        **options: passed to every hidden `Dense` layer (e.g. `kernel_regularizer`).

    Returns:
        An uncompiled `keras.Model`.
    """
    inputs = keras.Input(shape=(n_features,))
    hidden = inputs
    for units in hidden_units:
        hidden = keras.layers.Dense(units, activation=activation, **options)(hidden)
    outputs = keras.layers.Dense(n_outputs, activation=output_activation)(hidden)
    return keras.Model(inputs, outputs, name="mlp")
