"""MosaicSwitch: the mosaic stops for the last share of the schedule as planned now."""

import tensorflow as tf

from detector.callbacks import MosaicSwitch
from detector.callbacks.mosaic import mosaic_until


class _Schedule:
    planned_steps = 4000


def test_mosaic_until_is_the_first_epoch_in_the_last_share():
    assert mosaic_until(4000, 0.1, 10) == 360            # epochs 360..399: steps 3,600..3,999
    assert mosaic_until(4000, 0.1, 7) == 515             # 515 * 7 = 3,605 >= 3,600 > 514 * 7
    assert mosaic_until(100, 0.5, 10) == 5
    assert mosaic_until(101, 0.5, 10) == 6               # 50.5 steps in: epoch 6 starts at step 60


def test_switch_follows_a_shortened_schedule(capsys):
    schedule = _Schedule()
    until = tf.Variable(0, dtype=tf.int64)
    cb = MosaicSwitch(until, 0.1, 10, schedule)
    cb.on_train_begin()
    assert int(until.numpy()) == 360
    schedule.planned_steps = 3000                          # a time limit re-planned the schedule
    cb.on_epoch_end(100)
    assert int(until.numpy()) == 270
    cb.on_epoch_begin(269)
    assert capsys.readouterr().err == ""
    cb.on_epoch_begin(270)
    assert "the last 300 steps" in capsys.readouterr().err
