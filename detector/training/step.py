"""The distributed train step: one ``tf.function`` around ``strategy.run``.

Loss contract (the one :class:`detector.losses.DetectionLoss` follows): for a
per-replica batch, ``loss_fn(batch, outputs, global_count)`` returns a dict of
scalar tensors with a ``"total"`` key, each a *partial sum* normalised by the
GLOBAL count, so that summing the per-replica values over replicas gives the loss
of the whole global batch, and summing per-replica gradients gives its gradient.
``count_fn(batch)`` gives the replica's local count (e.g. positive anchors); the
step all-reduces it (SUM) before calling the loss.

Gradients are all-reduced here, not only inside the optimizer, because clipping
must use the norm of the GLOBAL gradient (Keras' own ``clipnorm`` clips each
replica's partial gradient).  The Keras 3 optimizer then all-reduces what it is
given once more (``TFOptimizer._all_reduce_sum_gradients``), so it receives
``clipped_global_grad / num_replicas`` on every replica; for a power-of-two
replica count this reproduces the global gradient bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

SUM = tf.distribute.ReduceOp.SUM
STOP_FLAGS = 3   # time limit, stop_training (a callback), preemption (SIGTERM); see Trainer

ForwardFn = Callable[[keras.Model, Any, bool], Any]
LossFn = Callable[[Any, Any, tf.Tensor], dict]
CountFn = Callable[[Any], tf.Tensor]
MetricsFn = Callable[[Any, Any], None]


def default_forward(model: keras.Model, batch: Any, training: bool) -> Any:
    """``batch`` is ``(inputs, targets)``; the model sees ``inputs``."""
    return model(batch[0], training=training)


def batch_size_count(batch: Any) -> tf.Tensor:
    """Count = examples in the replica batch (a mean-style loss over the global batch)."""
    first = tf.nest.flatten(batch)[0]
    return tf.cast(tf.shape(first)[0], tf.float32)


class TrainStep:
    """Callable ``step(distributed_batch, with_grads) -> dict`` of host-side tensors.

    Returned dict: every loss term summed over replicas (global-batch loss),
    ``"grad_norm"`` (global norm of the gradient before clipping) and, when
    ``with_grads``, ``"grads"``: the list of all-reduced, unclipped gradients in
    ``model.trainable_variables`` order (for :class:`GradientMonitor`).

    ``metrics_fn(batch, outputs)``, if set (argument or attribute, before the first
    call: it is traced in), runs in the replica context after the forward pass to
    update streaming metrics (Keras metrics created under ``strategy.scope()``);
    it returns nothing and its results are read by the caller.

    ``jit_compile``: compile each replica's forward pass, loss and gradient with XLA
    (the all-reduces, clipping and the optimizer update stay outside the cluster).
    """

    def __init__(self, strategy: tf.distribute.Strategy, model: keras.Model,
                 optimizer: keras.optimizers.Optimizer, loss_fn: LossFn,
                 forward_fn: ForwardFn = default_forward, count_fn: CountFn = batch_size_count,
                 clip_norm: float | None = None, metrics_fn: MetricsFn | None = None,
                 jit_compile: bool = False):
        self.strategy, self.model, self.optimizer = strategy, model, optimizer
        self.loss_fn, self.forward_fn, self.count_fn = loss_fn, forward_fn, count_fn
        self.clip_norm = clip_norm
        self.metrics_fn = metrics_fn
        self.jit_compile = bool(jit_compile)
        # XLA compiles the per-replica forward + loss + backward (no collectives inside, so
        # it also compiles on CPU/GPU under MirroredStrategy); TPUStrategy compiles the rest.
        self._forward_backward = (tf.function(self._forward_backward_fn, jit_compile=True)
                                  if self.jit_compile else self._forward_backward_fn)
        self._fns = {flag: tf.function(self._make(flag), reduce_retracing=True)
                     for flag in (False, True)}
        self._multi: dict[int, Any] = {}

    def __call__(self, batch: Any, with_grads: bool = False, stop_flags=None) -> dict:
        """``stop_flags``: optional ``STOP_FLAGS`` floats, this process's requests (1 = stop), summed over
        every replica of every worker in the step and returned as ``"stop_flags"``, so that
        all workers take a stop decision at the same step."""
        flags = tf.constant([0.0] * STOP_FLAGS if stop_flags is None else stop_flags, tf.float32)
        return self._fns[bool(with_grads)](batch, flags)

    def run_steps(self, iterator, steps: int, stop_flags=None) -> dict:
        """``steps`` train steps on ``next(iterator)`` batches in ONE ``tf.function`` call (no
        host sync in between; unrolled).  Returns the means over the steps of the loss terms
        and ``grad_norm``, and ``"stop_flags"`` summed over the steps."""
        fn = self._multi.get(steps)
        if fn is None:
            single = self._make(False)

            def multi(iterator, flags):
                total = None
                for _ in range(steps):
                    out = single(next(iterator), flags)
                    total = out if total is None else {k: total[k] + out[k] for k in out}
                return {k: v if k == "stop_flags" else v / steps for k, v in total.items()}

            fn = self._multi[steps] = tf.function(multi, reduce_retracing=True)
        flags = tf.constant([0.0] * STOP_FLAGS if stop_flags is None else stop_flags, tf.float32)
        return fn(iterator, flags)

    def _forward_backward_fn(self, batch: Any, count: tf.Tensor):
        from detector.model.norm import plain_batchnorm_ops

        n = self.strategy.num_replicas_in_sync
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape, plain_batchnorm_ops(self.jit_compile):
            outputs = self.forward_fn(self.model, batch, True)
            losses = dict(self.loss_fn(batch, outputs, count))
            if "total" not in losses:
                raise ValueError(f"the loss function must return a 'total' term, got {sorted(losses)}")
            total = losses["total"]
            if self.model.losses:  # regularisers: identical on every replica, so split them
                total = total + tf.add_n(self.model.losses) / n
                losses["total"] = total
        grads = tape.gradient(total, variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        return losses, tf.nest.map_structure(tf.stop_gradient, outputs), grads

    def _replica_step(self, batch: Any, stop_flags: tf.Tensor):
        ctx = tf.distribute.get_replica_context()
        n = self.strategy.num_replicas_in_sync
        variables = self.model.trainable_variables
        count = tf.cast(self.count_fn(batch), tf.float32)
        # one all-reduce for both (identity: the flags come from the host, place them here)
        count, stop_flags = ctx.all_reduce(SUM, [count, tf.identity(stop_flags) * tf.ones_like(count)])
        losses, outputs, grads = self._forward_backward(batch, count)
        if self.metrics_fn is not None:
            self.metrics_fn(batch, outputs)
        grads = ctx.all_reduce(SUM, grads)
        norm = tf.linalg.global_norm(grads)
        clipped = grads
        if self.clip_norm is not None:
            clipped, _ = tf.clip_by_global_norm(grads, self.clip_norm, use_norm=norm)
        self.optimizer.apply_gradients(zip([g / n for g in clipped], variables))
        return losses, norm, grads, stop_flags

    def _make(self, with_grads: bool):
        def step(batch, stop_flags):
            losses, norm, grads, flags = self.strategy.run(self._replica_step, args=(batch, stop_flags))
            out = {k: self.strategy.reduce(SUM, v, axis=None) for k, v in losses.items()}
            # grads, norm and flags are already identical on every replica: take the first copy.
            out["grad_norm"] = self.strategy.experimental_local_results(norm)[0]
            out["stop_flags"] = self.strategy.experimental_local_results(flags)[0]
            if with_grads:
                out["grads"] = [self.strategy.experimental_local_results(g)[0] for g in grads]
            return out

        return step
