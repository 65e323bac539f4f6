"""Exponential moving average (EMA) of the trained weights, swapped in where the model is used.

The optimizer keeps the average (Keras' ``use_ema``: after every update,
``average = m_t * average + (1 - m_t) * weight`` for each trainable variable; BatchNorm
statistics are not averaged: they are averages already).  The momentum warms up:
``m_t = min(train.ema_momentum, (1 + t) / (10 + t))`` at update ``t = 1, 2, ...`` and 0 at
``t = 0`` (the first update copies), as TensorFlow's ``ExponentialMovingAverage`` with
``num_updates``.  Keras' own average uses the final momentum from the second update on,
so a from-scratch run's average holds its random initial weights for about
``1 / (1 - m)`` steps (0.999: evaluated AP 0 for the first ~800 steps); warmed up, it
averages roughly the last ``t / 9`` steps until that window reaches ``1 / (1 - m)``.

The averaged weights are the ones that are evaluated, saved as the checkpoint's model
weights and exported to ``model.keras``: a checkpoint is written with the two swapped
(model entries = average, the optimizer's average slots = the raw weights) and swapped
back after the write, and ``--resume`` swaps them back after restoring.  So every reader
of a checkpoint's model weights (eval, export, predict) gets the average without knowing
about it, and a resumed run continues the raw weights exactly.
"""

from __future__ import annotations

import contextlib
import types

import keras
import tensorflow as tf


def _warmed_up_update(optimizer, trainable_variables):
    """``optimizer``'s average update with the momentum warm-up above."""
    if not optimizer.use_ema:
        return
    t = tf.cast(optimizer.iterations, tf.float32)
    momentum = tf.where(t > 0, tf.minimum(float(optimizer.ema_momentum), (1.0 + t) / (10.0 + t)), 0.0)
    for var, average in zip(trainable_variables, optimizer._model_variables_moving_average):
        if average is not None:
            m = tf.cast(momentum, var.dtype)
            average.assign(m * average + (1.0 - m) * var)


def warm_up_average(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Give ``optimizer`` (a Keras optimizer, ``use_ema`` or not) the momentum warm-up; returns it.

    Replaces the instance's average update only: the optimizer stays a plain Keras class,
    so a ``model.keras`` saved with it loads anywhere (a subclass would have to be
    registered in the loading process).
    """
    optimizer._update_model_variables_moving_average = types.MethodType(_warmed_up_update, optimizer)
    return optimizer


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
