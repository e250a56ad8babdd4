"""exceedance: train Keras models whose outputs must rarely exceed a limit.

Importing the package is cheap: no TensorFlow or Keras is imported until something trains.
"""

__version__ = "0.1.0"
