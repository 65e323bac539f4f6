"""Subprocess of tests/training/test_distributed_processes.py (not a test file).

usage: dist_worker.py MODE INDEX PORTS OUT_DIR

MODE
  union      one worker of 2 (MultiWorkerMirroredStrategy): one epoch of the real detector
             pipeline (smoke config, sharded input); saves the image ids its train steps
             consumed (ids_INDEX.npy) and its final weights (weights_INDEX.npy).
  time       one worker of 2 training the toy task with a time limit that only worker 0
             reaches (after its first step); saves the final step (step_INDEX.npy).
  full       one process, 2 epochs of 3 steps, step checkpoints every 2 steps (weights_full.npy).
  kill/term  the same, but the process sends itself SIGKILL / SIGTERM after step 5
             (mid-epoch 2, after the step-4 checkpoint).
  resume     --resume of the killed run in OUT_DIR/run_kill or run_term (INDEX 0: kill, 1: term).
"""

import json
import os
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE)]
mode, index, ports, out = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), Path(sys.argv[4])
if mode in ("union", "time"):
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                          "task": {"type": "worker", "index": index}})

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from detector.config import load_config  # noqa: E402


def flat_weights(model):
    return np.concatenate([w.ravel() for w in model.get_weights()])


def smoke(*extra):
    return load_config("smoke.yaml", [f"data.synthetic.cache_dir={out / 'synthetic'}",
                                      f"data.cache_dir={out / 'cache'}", "eval.steps=1", *extra])


def union():
    from detector.data import make_dataset
    from detector.data.pipeline import Epochs
    from detector.training import detector_task

    seen = []

    def with_ids(cfg, mosaic_until=None):
        # sharded_train_dataset_fn, but keeping each image's id so that the step can report it
        def fn(start_epoch, skip, steps, ctx):
            full = make_dataset(cfg, "train", training=True, input_context=ctx,
                                epochs=Epochs(steps, start_epoch, skip, mosaic_until))
            return full.map(lambda b: {"images": b["images"], "targets": b["targets"],
                                       "ids": tf.cast(b["gt"]["image_id"], tf.int32)})

        return fn

    class KeepWeights(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            np.save(out / f"weights_{index}.npy", flat_weights(self.model))

    update = detector_task.AnchorMetrics.update

    def recording_update(self, batch, outputs):   # runs once per consumed step, in the step
        tf.py_function(lambda ids: seen.extend(ids.numpy().tolist()) or 0, [batch["ids"]], tf.int32)
        update(self, batch, outputs)

    detector_task.sharded_train_dataset_fn = with_ids
    detector_task.AnchorMetrics.update = recording_update
    cfg = smoke("distribute.strategy=multi_worker", "train.epochs=1", "train.steps_per_epoch=null")
    outcome = detector_task.train(cfg, run_dir=out / "run", progress=False, callbacks=[KeepWeights()])
    assert outcome.steps_per_epoch == 6 and outcome.result.step == 6, outcome
    np.save(out / f"ids_{index}.npy", np.array(seen, np.int64))
    return outcome


def time_limit():
    from toy_task import BATCH, dataset_fn, loss_fn, make_model

    from detector.config import DistributeConfig
    from detector.training.engine import Trainer
    from detector.training.strategy import build_strategy, is_chief

    strategy = build_strategy(DistributeConfig(strategy="multi_worker"))
    with strategy.scope():
        model, opt = make_model(seed=3), keras.optimizers.Adam(0.05)
    trainer = Trainer(strategy=strategy, model=model, optimizer=opt, loss_fn=loss_fn,
                      train_dataset_fn=dataset_fn(seed=1), steps_per_epoch=50, epochs=4,
                      global_batch_size=BATCH, run_dir=out / "run", chief=is_chief(strategy), progress=False,
                      time_limit_s=1e-9 if index == 0 else 3600.0)
    result = trainer.fit()
    assert result.stop_reason == "time_limit", result
    np.save(out / f"step_{index}.npy", np.array([result.step, result.epochs_done]))


class SignalAfterStep(keras.callbacks.Callback):
    def __init__(self, sig, step):
        super().__init__()
        self.sig, self.step = sig, step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            os.kill(os.getpid(), self.sig)


def preemption():
    from detector.training.detector_task import train

    cfg = smoke("train.epochs=2", "train.steps_per_epoch=3", "train.checkpoint_every_n_steps=2",
                "eval.every_epochs=2")
    if mode == "resume":
        name = ("kill", "term")[index]
        outcome = train(cfg, run_dir=out / f"run_{name}", resume=True, progress=False)
    else:
        name = mode
        sig = {"kill": signal.SIGKILL, "term": signal.SIGTERM}.get(mode)
        outcome = train(cfg, run_dir=out / f"run_{mode}", progress=False,
                        callbacks=[SignalAfterStep(sig, 5)] if sig else [])
        if mode == "term":
            assert outcome.result.stop_reason == "preempted" and outcome.result.step == 5, outcome.result
            return   # the resumed run saves the weights
    assert outcome.result.step == 6 and outcome.result.epochs_done == 2, outcome.result
    model = keras.models.load_model(outcome.run_dir / "model.keras", compile=False)
    np.save(out / f"weights_{name if mode == 'resume' else 'full'}.npy", flat_weights(model))


if mode == "union":
    union()
elif mode == "time":
    time_limit()
else:
    preemption()
