"""Model builders. A builder is any callable `(n_features, n_outputs, **model_fields) -> Model`.

Keras is imported inside the builder, so `validation.validate` can check a builder's signature
against `model.options` before TensorFlow starts.
"""

from __future__ import annotations

from typing import Any


def build_mlp(
    n_features: int,
    n_outputs: int,
    hidden_units: list[int],
    activation: str = "relu",
    output_activation: str = "linear",
    kernel_initializer: str = "glorot_uniform",
    kernel_regularizer: Any = None,
    bias_regularizer: Any = None,
    use_bias: bool = True,
    dropout: float = 0.0,
):
    """A plain multilayer perceptron.

    Args:
        n_features: input width.
        n_outputs: output width.
        hidden_units: units per hidden layer.
        activation: hidden-layer activation.
        output_activation: `linear`, or `sigmoid` for outputs bounded in (0, 1).
        kernel_initializer, kernel_regularizer, bias_regularizer, use_bias: for every hidden
            `Dense` layer (set them as `model.options.kernel_regularizer=l2`).
        dropout: dropout rate after every hidden layer (0 = none).

    Returns:
        An uncompiled `keras.Model`.
    """
    import keras

    dense = {
        "kernel_initializer": kernel_initializer,
        "kernel_regularizer": kernel_regularizer,
        "bias_regularizer": bias_regularizer,
        "use_bias": use_bias,
    }
    inputs = keras.Input(shape=(n_features,))
    hidden = inputs
    for units in hidden_units:
        hidden = keras.layers.Dense(units, activation=activation, **dense)(hidden)
        if dropout:
            hidden = keras.layers.Dropout(dropout)(hidden)
    outputs = keras.layers.Dense(n_outputs, activation=output_activation)(hidden)
    return keras.Model(inputs, outputs, name="mlp")


def stacked_mlp(
    slots: int,
    n_features: int,
    n_outputs: int,
    hidden_units: list[int],
    activation: str = "relu",
    output_activation: str = "linear",
    kernel_initializer: str = "glorot_uniform",
    use_bias: bool = True,
    dropout: float = 0.0,
):
    """`build_mlp` for `slots` trials at once: every kernel of shape `(slots, in, out)`, one
    `einsum` per layer (`stacking.StackedMLP`). Takes no regularizers: with them, the trials
    train as copies of `build_mlp`'s model."""
    from exceedance.stacking import StackedMLP

    widths = [n_features, *hidden_units, n_outputs]
    return StackedMLP(slots, widths, activation, output_activation, kernel_initializer, use_bias, dropout)


# A builder declares itself stackable with a `stack` attribute: a function that takes the number
# of trials first, then the builder's own arguments, and returns a stacked network (the interface
# of `stacking.StackedMLP`). Fields its signature lacks make the trials train as copies instead.
build_mlp.stack = stacked_mlp
