"""One worker of the MultiWorkerMirroredStrategy test (run as a subprocess, not a test file).

Workers train 1 epoch, then resume to 2 epochs; the single process trains 2 epochs.

usage: mwms_worker.py INDEX PORTS OUT_DIR   (INDEX -1 = single process, default strategy)
"""

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE)]
index, ports, out = int(sys.argv[1]), sys.argv[2].split(","), Path(sys.argv[3])
if index >= 0:
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                          "task": {"type": "worker", "index": index}})

import keras  # noqa: E402
import numpy as np  # noqa: E402
from toy_task import BATCH, dataset_fn, loss_fn, make_model  # noqa: E402

from detector.config import DistributeConfig  # noqa: E402
from detector.training.engine import Trainer  # noqa: E402
from detector.training.strategy import build_strategy, is_chief  # noqa: E402

strategy = build_strategy(DistributeConfig(strategy="multi_worker" if index >= 0 else "default"))
# every worker gets the same run dir (a shared file system); only the chief writes to it
run_dir = out / ("run" if index >= 0 else "single")


def trainer(epochs):
    with strategy.scope():
        model, opt = make_model(seed=3), keras.optimizers.Adam(0.05)
    return Trainer(strategy=strategy, model=model, optimizer=opt, loss_fn=loss_fn,
                   train_dataset_fn=dataset_fn(seed=1), steps_per_epoch=3, epochs=epochs,
                   global_batch_size=BATCH, clip_norm=1.0, run_dir=run_dir,
                   chief=is_chief(strategy), progress=False)


if index >= 0:  # interrupted after one epoch, then resumed
    trainer(1).fit()
    final = trainer(2)
    final.fit(resume=True)
else:
    final = trainer(2)
    final.fit()
np.save(out / f"weights_{index}.npy", np.concatenate([w.ravel() for w in final.model.get_weights()]))
