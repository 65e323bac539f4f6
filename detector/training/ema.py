"""Exponential moving average (EMA) of the trained weights, swapped in where the model is used.

The optimizer keeps the average (Keras' ``use_ema``: after every update,
``average = m * average + (1 - m) * weight`` for each trainable variable, ``m`` =
``train.ema_momentum``; BatchNorm statistics are not averaged: they are averages
already).  The averaged weights are the ones that are evaluated, saved as the
checkpoint's model weights and exported to ``model.keras``: a checkpoint is written
with the two swapped (model entries = average, the optimizer's average slots = the
raw weights) and swapped back after the write, and ``--resume`` swaps them back after
restoring.  So every reader of a checkpoint's model weights (eval, export, predict)
gets the average without knowing about it, and a resumed run continues the raw
weights exactly.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf


def has_average(optimizer: keras.optimizers.Optimizer) -> bool:
    """True when ``optimizer`` keeps a moving average of the weights (built, ``use_ema``)."""
    return bool(getattr(optimizer, "use_ema", False)) and bool(
        getattr(optimizer, "_model_variables_moving_average", None))


def swap_average(optimizer: keras.optimizers.Optimizer) -> None:
    """Exchange the values of the trainable weights and their moving averages (in place).

    Its own inverse.  Call in a cross-replica context (outside ``strategy.run``): a
    mirrored variable's ``assign`` then writes every replica's copy.
    """
    averages = optimizer._model_variables_moving_average
    for var, avg in zip(optimizer._trainable_variables, averages, strict=True):
        raw = tf.identity(var.value)
        var.assign(avg.value)
        avg.assign(raw)


@contextlib.contextmanager
def averaged(optimizer: keras.optimizers.Optimizer):
    """Inside: the model holds the averaged weights (no-op without an average)."""
    swap = has_average(optimizer)
    if swap:
        swap_average(optimizer)
    try:
        yield
    finally:
        if swap:
            swap_average(optimizer)
