"""exceedance: train Keras models whose outputs must rarely exceed a limit.

Importing the package is cheap: no TensorFlow or Keras is imported until something trains.
"""

__version__ = "0.1.0"

import os

# No network at run time: MLflow 3 sends usage telemetry from every process that uses it (and
# flushes it at exit, which held the end of each search by about a second). Set
# MLFLOW_DISABLE_TELEMETRY=false to allow it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
