"""Networks that hold K trials' weights side by side, for `trial_stack.TrialStack`.

A stacked network maps features `(batch, n_features)` to predictions `(K, batch, n_outputs)`,
slot k computed from slot k's weights alone, so the sum of the K trials' losses has, for each
trial's weights, the gradient of that trial's loss alone.

- `StackedMLP`: the built-in MLP with every kernel of shape `(K, in, out)` and one `einsum` per
  layer, so the graph does not grow with K (`models.stacked_mlp`).
- `Copies`: any other model builder (`model._target_`), K copies side by side, unless the
  builder declares a stacked form of its own (a `stack` attribute, see `models.build_mlp`).

A stacked network has `slots`, `variables` (each slot's weights on the first axis, or one
slot's: `slot_of`), `initialize(slot, seed)`, `set_weights(slot, weights)`, `__call__(x,
training)` and `regularization()` (a `(K,)` tensor of penalties added to each slot's loss).

Imports TensorFlow and Keras: only the commands that train load this module.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from exceedance.config import ModelConfig


def model_fields(model: ModelConfig) -> dict:
    """The keyword arguments a builder is called with, beside the data's widths."""
    return {
        "hidden_units": list(model.hidden_units),
        "activation": model.activation,
        "output_activation": model.output_activation,
        **dict(model.options),
    }


def stack_builder(model: ModelConfig) -> Callable | None:
    """The configured builder's stacked form (its `stack` attribute, see `models.stacked_mlp`),
    when it has one that takes every configured field; None: the trials train as copies."""
    from hydra.utils import get_method

    stack = getattr(get_method(model._target_), "stack", None)
    if stack is None:
        return None
    try:
        inspect.signature(stack).bind(1, 1, 1, **model_fields(model))
    except TypeError:
        return None
    return stack


def stackable(model: ModelConfig) -> bool:
    return stack_builder(model) is not None


def _seeded(name: str, seed: int):
    """Keras's initializer of that name, seeded."""
    initializer = keras.initializers.get(name)
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = seed
    return initializer.__class__.from_config(config)


class StackedMLP:
    """K multilayer perceptrons as `models.build_mlp` builds them, stacked on a leading axis
    (made by `models.stacked_mlp`).

    Args:
        slots: K.
        widths: the layers' widths, features first, outputs last.
        activation, output_activation, kernel_initializer, use_bias, dropout: as `build_mlp`.
    """

    def __init__(
        self,
        slots: int,
        widths: list[int],
        activation: str,
        output_activation: str,
        kernel_initializer: str,
        use_bias: bool,
        dropout: float,
    ):
        self.slots, self.dropout = slots, float(dropout)
        self.layers = []  # (kernel, bias or None, activation, kernel initializer name)
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            last = i == len(widths) - 2
            kernel = tf.Variable(tf.zeros((slots, fan_in, fan_out)), name=f"kernel_{i}")
            # build_mlp's output layer keeps Keras's defaults: a bias, glorot_uniform.
            bias = tf.Variable(tf.zeros((slots, 1, fan_out)), name=f"bias_{i}") if use_bias or last else None
            initializer = "glorot_uniform" if last else kernel_initializer
            function = keras.activations.get(output_activation if last else activation)
            self.layers.append((kernel, bias, function, initializer))
        self.variables = [v for kernel, bias, _, _ in self.layers for v in (kernel, bias) if v is not None]

    def slot_of(self, variable) -> int | None:
        return None  # every variable holds all slots on its first axis

    def initialize(self, slot: int, seed: int) -> None:
        """New weights for one slot, drawn from `seed`."""
        for i, (kernel, bias, _, initializer) in enumerate(self.layers):
            kernel[slot].assign(_seeded(initializer, seed * 101 + i)(kernel.shape[1:]))
            if bias is not None:
                bias[slot].assign(tf.zeros(bias.shape[1:]))

    def set_weights(self, slot: int, weights: list[np.ndarray]) -> None:
        """Slot weights from a `build_mlp` model's `get_weights()` (kernels and biases in order)."""
        arrays = iter(weights)
        for kernel, bias, _, _ in self.layers:
            kernel[slot].assign(next(arrays))
            if bias is not None:
                bias[slot].assign(np.reshape(next(arrays), bias.shape[1:]))

    def __call__(self, x, training: bool = False):
        hidden = x
        for i, (kernel, bias, activation, _) in enumerate(self.layers):
            # the features are shared by all slots; each later layer reads its own slot's
            hidden = tf.einsum("bi,kio->kbo" if i == 0 else "kbi,kio->kbo", hidden, kernel)
            if bias is not None:
                hidden = hidden + bias
            hidden = activation(hidden)
            if training and self.dropout and i < len(self.layers) - 1:
                hidden = tf.nn.dropout(hidden, rate=self.dropout)
        return hidden

    def regularization(self):
        return tf.zeros((self.slots,))


class Copies:
    """K models from any builder, side by side (a `model._target_` that is not stackable).

    Args:
        slots: K.
        build: `() -> keras.Model`, called once per slot and once per new trial's weights.
    """

    def __init__(self, slots: int, build: Callable[[], keras.Model]):
        self.slots, self.build = slots, build
        self.models = [build() for _ in range(slots)]
        self._slot = {}
        for k, model in enumerate(self.models):
            for variable in model.trainable_variables:
                self._slot[id(variable.value)] = k
        self.variables = [v.value for model in self.models for v in model.trainable_variables]

    def slot_of(self, variable) -> int | None:
        return self._slot[id(variable)]

    def initialize(self, slot: int, seed: int) -> None:
        """New weights for one slot: those of a fresh model built under `seed` (as a trial
        trained alone starts)."""
        keras.utils.set_random_seed(seed)
        self.models[slot].set_weights(self.build().get_weights())

    def set_weights(self, slot: int, weights: list[np.ndarray]) -> None:
        self.models[slot].set_weights(weights)

    def __call__(self, x, training: bool = False):
        return tf.stack([tf.convert_to_tensor(model(x, training=training)) for model in self.models])

    def regularization(self):
        totals = [
            tf.add_n([tf.convert_to_tensor(loss) for loss in model.losses]) if model.losses else 0.0
            for model in self.models
        ]
        return tf.cast(tf.stack(totals), tf.float32)
