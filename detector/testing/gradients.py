"""``check_gradients``: finite, correct gradients for losses, functions and models.

The checked quantity is a scalar ``f``: a loss value, a function output, or a
model output.  Non-scalar outputs are reduced to ``sum(out * r)`` with a fixed
standard-normal ``r`` (seeded), which checks every output direction at once and
keeps the Jacobian ``1 x n``.  Three checks, each raising ``AssertionError`` with
the tensor name, flat index and values:

1. ``f`` is finite;
2. the analytic gradient (``tf.GradientTape``) is finite for **every** entry;
3. on up to ``max_checks`` entries per tensor (all if fewer, else a seeded random
   subset that always holds the smallest and largest entry, e.g. the extreme
   logits), analytic and central finite-difference gradients from
   ``tf.test.compute_gradient`` agree:
   ``|analytic - numeric| <= atol * max(1, |f|) + rtol * max(|analytic|, |numeric|)``.

Precision: float inputs of functions and losses are cast to float64 (and a
``keras.losses.Loss`` is rebuilt from its config with ``dtype="float64"`` when
its constructor accepts ``dtype``), so the comparison is tight.  A target that
casts to float32 internally (e.g. ``tf.cast(logits, tf.float32)`` instead of the
loss dtype) then fails the float64 tolerances; fix the cast, or pass
``dtype=None`` with float32 inputs.  Defaults by the dtype of ``f``:

=========  ========  ========  =======
dtype      delta     atol      rtol
=========  ========  ========  =======
float64    1e-5      1e-6      1e-5
float32    1e-3      1e-3      1e-2
=========  ========  ========  =======

(float64 central differences: truncation ~delta**2 = 1e-10, round-off
~1e-16 / delta = 1e-11.)  Models are checked in their own variable dtype; build
them with ``dtype="float64"`` for the tight tolerances.  Points closer than
``delta`` to a kink (ReLU at 0, Huber at ``|x| = delta``) legitimately disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

TOLERANCES = {  # dtype of f -> (delta, atol, rtol)
    "float64": (1e-5, 1e-6, 1e-5),
    "float32": (1e-3, 1e-3, 1e-2),
}


_FLOAT32_HINT = (
    ". If the target casts to float32 internally, float64 tolerances are too tight: "
    "compute in the loss dtype, or pass dtype=None with float32 inputs"
)


@dataclass(frozen=True)
class GradientReport:
    """Outcome of a passed check.

    ``errors`` maps tensor name -> max |analytic - numeric|; ``atol`` is the
    effective (already ``max(1, |f|)``-scaled) absolute tolerance.
    """

    value: float
    dtype: str
    delta: float
    atol: float
    rtol: float
    num_checked: int
    max_abs_error: float
    errors: dict = field(default_factory=dict)


def check_gradients(
    target,
    inputs,
    *,
    wrt=None,
    loss=None,
    y_true=None,
    dtype: str | None = "float64",
    delta: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    max_checks: int = 128,
    seed: int = 0,
) -> GradientReport:
    """Checks gradients of ``target`` at ``inputs``; returns a report or raises.

    Args:
      target: one of
        * a ``keras.losses.Loss``: ``inputs = (y_true, y_pred[, sample_weight])``;
          ``wrt`` defaults to ``(1,)`` (``y_pred``).
        * a callable ``fn(*inputs)``: ``inputs`` a tensor or tuple of tensors;
          ``wrt`` defaults to every floating input.
        * a ``keras.Model`` / ``keras.Layer``: ``inputs`` its input (tensor or list);
          ``wrt`` is ``"weights"`` (trainable), ``"inputs"`` (floating inputs)
          or ``"both"`` (default).  With ``loss`` and ``y_true`` the checked
          scalar is ``loss(y_true, model(inputs))``.
      wrt: indices of ``inputs`` to differentiate (functions and losses), or the
        model choice above.
      dtype: ``"float64"`` casts floating inputs (and the loss) to float64;
        ``None`` keeps them.  Ignored for models.
      delta, atol, rtol: override the per-dtype defaults (module docstring).
      max_checks: finite-difference entries per tensor (2 evaluations each).
      seed: seeds the entry subset and the output projection.

    Returns:
      :class:`GradientReport`.

    Raises:
      AssertionError: non-finite value or gradient, or a finite-difference mismatch.
    """
    if isinstance(target, keras.layers.Layer):
        fn, xs, names, wrt_idx = _model_problem(target, inputs, wrt, loss, y_true)
    else:
        if isinstance(target, keras.losses.Loss):
            target = _as_float64_loss(target) if dtype == "float64" else target
            wrt = (1,) if wrt is None else wrt
        fn, xs, names, wrt_idx = _function_problem(target, inputs, wrt, dtype)
    scalar_fn = _scalarize(fn, seed)
    return _run_checks(scalar_fn, xs, names, wrt_idx, delta, atol, rtol, max_checks, seed)


# ---------------------------------------------------------------- problem setup


def _is_float(x) -> bool:
    return tf.as_dtype(x.dtype).is_floating


def _function_problem(fn, inputs, wrt, dtype):
    xs = [tf.convert_to_tensor(x) for x in (inputs if isinstance(inputs, (tuple, list)) else (inputs,))]
    if dtype is not None:
        xs = [tf.cast(x, dtype) if _is_float(x) else x for x in xs]
    wrt_idx = [i for i, x in enumerate(xs) if _is_float(x)] if wrt is None else list(wrt)
    for i in wrt_idx:
        if not _is_float(xs[i]):
            raise ValueError(f"check_gradients: input {i} has dtype {xs[i].dtype.name}; only floats")
    return (lambda *a: fn(*a)), xs, [f"input {i}" for i in range(len(xs))], wrt_idx


def _as_float64_loss(loss_obj):
    """The same loss with ``dtype="float64"`` if its config round trip allows it."""
    if loss_obj.dtype == "float64":
        return loss_obj
    try:
        rebuilt = type(loss_obj).from_config({**loss_obj.get_config(), "dtype": "float64"})
    except (TypeError, ValueError):
        return loss_obj
    return rebuilt if rebuilt.dtype == "float64" else loss_obj


def _model_problem(model, inputs, wrt, loss, y_true):
    wrt = "both" if wrt is None else wrt
    if wrt not in ("weights", "inputs", "both"):
        raise ValueError(f"check_gradients: for a model wrt must be weights/inputs/both, got {wrt!r}")
    single = not isinstance(inputs, (tuple, list))
    xs_in = [tf.convert_to_tensor(x) for x in ((inputs,) if single else inputs)]
    if not model.built:
        model(xs_in[0] if single else xs_in)
    weights = list(model.trainable_variables)
    non_trainable = [tf.convert_to_tensor(v) for v in model.non_trainable_variables]
    n_w = len(weights)

    def fn(*args):
        x = args[n_w:]
        out, _ = model.stateless_call(list(args[:n_w]), non_trainable, x[0] if single else list(x))
        return out if loss is None else loss(y_true, out)

    xs = [tf.convert_to_tensor(v) for v in weights] + xs_in
    names = [v.path for v in weights] + [f"input {i}" for i in range(len(xs_in))]
    wrt_idx = []
    if wrt in ("weights", "both"):
        wrt_idx += list(range(n_w))
    if wrt in ("inputs", "both"):
        wrt_idx += [n_w + i for i, x in enumerate(xs_in) if _is_float(x)]
    return fn, xs, names, wrt_idx


def _scalarize(fn, seed):
    """``fn`` -> scalar: scalars pass through, others become ``sum(out * r)``."""
    projections = {}
    rng = np.random.default_rng(seed)

    def scalar_fn(*xs):
        total = None
        for j, out in enumerate(tf.nest.flatten(fn(*xs))):
            out = tf.convert_to_tensor(out)
            if not _is_float(out):
                continue
            if out.shape.rank != 0:
                if j not in projections:
                    projections[j] = rng.standard_normal(out.shape).astype(out.dtype.as_numpy_dtype)
                out = tf.reduce_sum(out * projections[j])
            total = out if total is None else total + tf.cast(out, total.dtype)
        if total is None:
            raise ValueError("check_gradients: target returned no floating output")
        return total

    return scalar_fn


# ---------------------------------------------------------------------- checks


def _run_checks(scalar_fn, xs, names, wrt_idx, delta, atol, rtol, max_checks, seed):
    with tf.GradientTape() as tape:
        tape.watch([xs[i] for i in wrt_idx])
        value = scalar_fn(*xs)
    value_np = float(value.numpy())
    if not np.isfinite(value_np):
        raise AssertionError(f"check_gradients: the checked value is not finite: {value_np}")
    grads = tape.gradient(value, [xs[i] for i in wrt_idx])
    for i, g in zip(wrt_idx, grads):
        _assert_finite(names[i], g)

    d_delta, d_atol, d_rtol = TOLERANCES.get(value.dtype.name, TOLERANCES["float32"])
    delta = d_delta if delta is None else delta
    atol = (d_atol if atol is None else atol) * max(1.0, abs(value_np))
    rtol = d_rtol if rtol is None else rtol

    rng = np.random.default_rng(seed)
    picks = [_pick_entries(xs[i], max_checks, rng) for i in wrt_idx]

    def shifted_fn(*zs):
        shifted = list(xs)
        for i, idx, z in zip(wrt_idx, picks, zs):
            bump = tf.scatter_nd(idx[:, None], z, [int(np.prod(xs[i].shape))])
            shifted[i] = xs[i] + tf.reshape(bump, tf.shape(xs[i]))
        return scalar_fn(*shifted)

    zs = [np.zeros(len(idx), xs[i].dtype.as_numpy_dtype) for i, idx in zip(wrt_idx, picks)]
    theoretical, numeric = tf.test.compute_gradient(shifted_fn, zs, delta=delta)
    errors = {
        names[i]: _compare(names[i], idx, a, n, atol, rtol, f"delta={delta:g}, dtype={value.dtype.name}")
        for i, idx, a, n in zip(wrt_idx, picks, theoretical, numeric)
    }
    return GradientReport(
        value=value_np,
        dtype=value.dtype.name,
        delta=delta,
        atol=atol,
        rtol=rtol,
        num_checked=int(sum(len(p) for p in picks)),
        max_abs_error=max(errors.values(), default=0.0),
        errors=errors,
    )


def _compare(name, idx, analytic, numeric, atol, rtol, setting):
    """Max |analytic - numeric| over the checked entries ``idx``; raises on a mismatch."""
    a, n = analytic.reshape(-1).astype(np.float64), numeric.reshape(-1).astype(np.float64)
    diff = np.abs(a - n)
    bound = atol + rtol * np.maximum(np.abs(a), np.abs(n))
    bad = np.flatnonzero(~(diff <= bound))
    if bad.size:
        k = bad[np.argmax(diff[bad] - bound[bad])]
        raise AssertionError(
            f"check_gradients: gradient w.r.t. {name} disagrees with finite differences "
            f"at {bad.size} of {idx.size} checked entries; worst at flat index {idx[k]}: "
            f"analytic={a[k]:.10g}, numeric={n[k]:.10g}, |diff|={diff[k]:.3g} > "
            f"tolerance {bound[k]:.3g} (atol={atol:.3g}, rtol={rtol:.3g}, {setting})"
            + _FLOAT32_HINT * ("float64" in setting)
        )
    return float(diff.max(initial=0.0))


def _pick_entries(x, max_checks, rng):
    """All flat indices, or a sorted random subset that keeps the min and max entries."""
    flat = tf.reshape(x, [-1]).numpy()
    n = flat.size
    if n <= max_checks:
        return np.arange(n)
    extremes = {int(np.argmin(flat)), int(np.argmax(flat))}
    rest = np.setdiff1d(np.arange(n), list(extremes))
    chosen = rng.choice(rest, max(max_checks - len(extremes), 0), replace=False)
    return np.sort(np.concatenate([list(extremes), chosen]).astype(np.int64))


def _assert_finite(name, grad):
    if grad is None:
        return  # disconnected: the gradient is zero
    g = tf.convert_to_tensor(grad).numpy()
    bad = np.flatnonzero(~np.isfinite(g))
    if bad.size:
        raise AssertionError(
            f"check_gradients: analytic gradient w.r.t. {name} has {bad.size} non-finite "
            f"entries of {g.size}; first at flat index {bad[0]}: {g.reshape(-1)[bad[0]]}"
        )
