"""Keras 3 models (``keras`` and ``keras.ops`` only, so model code stays backend-agnostic)."""
