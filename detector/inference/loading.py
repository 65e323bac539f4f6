"""Find and load a trained model: a run directory, a checkpoint, or a ``.keras`` file.

Used by ``detector eval``, ``detector export`` and ``detector predict``.  A run
directory offers its ``model.keras``, then ``checkpoints/best``, then
``checkpoints/last`` (newest first); :func:`load_checkpoint` takes the first one that
loads, saying which it skipped and why.  A model that does not fit the config (other
classes, input size or architecture) is a :class:`~detector.errors.UserError`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from detector.errors import UserError


def checkpoint_candidates(arg: str) -> tuple[list[tuple[str, str]], Path | None]:
    """``([(kind "keras" | "checkpoint", path), ...] in order of preference, run_dir or None)``.

    A run directory gives its model.keras, then checkpoints/best, then checkpoints/last
    (each newest first); a checkpoint directory its checkpoints, newest first.
    """
    from detector.training.checkpoints import checkpoint_paths

    p = Path(arg).expanduser()
    if p.is_dir():
        found = [("keras", str(p / "model.keras"))] if (p / "model.keras").is_file() else []
        for sub in ("checkpoints/best", "checkpoints/last"):
            found += [("checkpoint", c) for c in checkpoint_paths(p / sub) if c not in {f for _, f in found}]
        if found:
            return found, p
        found = [("checkpoint", c) for c in checkpoint_paths(p)]
        if found:
            return found, None
        raise UserError(f"--checkpoint {arg}: the directory has no model.keras, no checkpoints/best "
                        "or checkpoints/last, and no checkpoint of its own")
    if p.is_file() and p.suffix == ".keras":
        return [("keras", str(p))], None
    if Path(f"{p}.index").is_file():
        return [("checkpoint", str(p))], None
    if p.exists():
        raise UserError(f"--checkpoint {arg}: not a .keras file, a run directory or a checkpoint prefix")
    raise UserError(f"--checkpoint {arg}: no such file, directory or checkpoint prefix")


def resolve_checkpoint(arg: str) -> tuple[str, str, Path | None]:
    """``(kind "keras" | "checkpoint", path, run_dir or None)``: the preferred candidate for ``--checkpoint``."""
    found, run_dir = checkpoint_candidates(arg)
    return (*found[0], run_dir)


def load_checkpoint(cfg, arg: str):
    """``(model, cfg, path, run_dir)`` from the first LOADABLE candidate of ``--checkpoint``.

    A truncated or corrupt file (e.g. a run killed while exporting model.keras) is
    skipped for the next candidate with a warning naming both; a model that does not
    fit the config is an error (an older checkpoint of the same run would not fit either).
    """
    from detector.training.checkpoints import UnreadableCheckpoint

    found, run_dir = checkpoint_candidates(arg)
    problems = []
    for kind, path in found:
        try:
            model, cfg_used = load_model_for(cfg, kind, path)
        except UnreadableCheckpoint as e:
            problems.append(str(e))
            continue
        if problems:
            print(f"warning: {'; '.join(problems)}; using {path} instead", file=sys.stderr, flush=True)
        return model, cfg_used, path, run_dir
    raise UserError(f"--checkpoint {arg}: nothing loadable: " + "; ".join(problems))


def load_model_for(cfg, kind: str, path: str):
    """``(model, cfg)``: the cfg's model/loss sections replaced by the model's own for .keras."""
    import dataclasses

    import keras
    import tensorflow as tf

    import detector.losses  # noqa: F401  (registers the serialisable loss classes)
    from detector.model import Detector, build_detector
    from detector.training.checkpoints import UnreadableCheckpoint, restore_model

    if kind == "checkpoint":
        model = build_detector(cfg)
        logger, level = tf.get_logger(), tf.get_logger().level
        # a failed restore warns once per unrestored variable when it is garbage-collected;
        # the one-line error says it all, so the level stays at ERROR on failure
        logger.setLevel("ERROR")
        try:
            restore_model(model, path)
        except tf.errors.OpError as e:
            raise UnreadableCheckpoint(f"checkpoint {path}: cannot read it: {e.message[:300]}") from None
        logger.setLevel(level)
        return model, cfg
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as e:  # any failure to deserialise is a bad (e.g. truncated) input file
        raise UnreadableCheckpoint(f"{path}: cannot load the Keras model: {type(e).__name__}: {str(e)[:300]}") from None
    if not isinstance(model, Detector):
        raise UserError(f"{path}: holds a {type(model).__name__}, not a detector model")
    for key, have, want in (("data.classes", list(model.class_names), list(cfg.data.classes)),
                            ("data.image_size", model.image_size, cfg.data.image_size)):
        if have != want:
            raise UserError(f"{path}: the model was built for {key} = {have}, but the config has {want}")
    tree = model.config_tree
    return model, dataclasses.replace(cfg, model=tree.model, loss=tree.loss)


def open_tflite(path: str, flag: str):
    """A :class:`~detector.export.tflite_runner.TFLiteDetector` for ``path`` given as ``flag``;
    a missing file or one that is not a TFLite model is a :class:`UserError`."""
    from detector.export.tflite_runner import TFLiteDetector

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{flag} {path}: no such file")
    try:
        return TFLiteDetector(p)
    except (ValueError, RuntimeError) as e:
        raise UserError(f"{flag} {path}: cannot load it as a TFLite model: {str(e)[:300]}") from None
