"""Test-time augmentation: the horizontal flip and extra input scales, merged before NMS.

* ``eval.flip_test``: each pass's raw outputs are averaged with those on the mirrored
  input, per anchor (:mod:`detector.model.flip_test`).
* ``eval.test_scales``: for each factor ``f`` the model runs on the network input
  resized (bilinear) to ``side = round(S * f)``, a multiple of ``2**max_level``.  A
  factor other than 1 needs a *twin*: the same :class:`~detector.model.Detector` built for
  that side (its own anchors) with the model's weights (:meth:`TestTimeAugmentation.sync`
  copies them again after training steps).  Each pass's top candidates are decoded in its
  own frame, multiplied by ``S / side`` into the ``S``-pixel frame of the original input,
  and all passes' candidates go through one NMS (and box voting,
  ``eval.box_voting_iou``): :func:`detector.model.postprocess.merge_candidates`.

The default (no flip, ``test_scales: [1.0]``) is exactly
:func:`~detector.model.postprocess.decode_detections` on the model's outputs.  The cost is
one forward pass per scale (about ``f**2`` of the plain pass each), twice with the flip
test.  Exported models never include it (:meth:`detector.config.EvalConfig.single_pass`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from detector.model.flip_test import flip_averaged_outputs, mirror_permutation
from detector.model.postprocess import merge_candidates, select_detections, top_candidates


def twin_at(model, side: int):
    """The detector of ``model``'s config and weights for a square input of ``side`` px
    (built under the caller's distribution strategy scope, if any)."""
    from detector.model.detector import Detector

    twin = Detector.from_config({**model.get_config(), "image_size": int(side), "name": f"{model.name}_{side}"})
    twin.set_weights(model.get_weights())
    return twin


class TestTimeAugmentation:
    """Detections of ``model`` under ``eval_cfg``'s flip test, test scales and box voting.

    Args:
      model: a :class:`~detector.model.Detector` for ``S x S`` inputs.
      eval_cfg: :class:`~detector.config.EvalConfig`.

    ``outputs(images)`` gives one raw output dict per scale (flip-averaged when on);
    ``decode(outputs)`` the detections dict of
    :func:`~detector.model.postprocess.decode_detections` (boxes yxyx in ``S``-pixel
    network coordinates, ``D = eval.max_detections`` rows).  Both are traceable.
    """

    __test__ = False   # not a pytest class

    def __init__(self, model, eval_cfg):
        self.model, self.eval_cfg = model, eval_cfg
        self.image_size = int(model.image_size)
        self.factors = tuple(model.config_tree.model.box_scale_factors)
        self.passes = []    # (side, model or twin, anchors [N_side, 4], mirror [N_side] or None)
        for f in eval_cfg.test_scales:
            side = int(round(self.image_size * f))
            net = model if side == self.image_size else twin_at(model, side)
            anchors = np.asarray(net.anchors(), np.float32)
            mirror = tf.constant(mirror_permutation(anchors, side)) if eval_cfg.flip_test else None
            self.passes.append((side, net, tf.constant(anchors), mirror))

    @property
    def twins(self) -> list:
        return [net for _, net, _, _ in self.passes if net is not self.model]

    def sync(self) -> None:
        """Copy the model's current weights into the twins (none without extra scales)."""
        twins = self.twins
        if twins:
            weights = self.model.get_weights()
            for twin in twins:
                twin.set_weights(weights)

    def outputs(self, images, plain=None) -> list[dict]:
        """Raw outputs per scale for float32 ``images`` ``[B, S, S, 3]``; ``plain``: the
        model's outputs on ``images`` when already computed (reused, not recomputed)."""
        result = []
        for side, net, _, mirror in self.passes:
            same = side == self.image_size
            x = images if same else tf.image.resize(images, [side, side])
            out = plain if (same and plain is not None) else net(x, training=False)
            result.append(out if mirror is None else flip_averaged_outputs(net, x, mirror, out))
        return result

    def decode(self, outputs: list[dict]) -> dict[str, tf.Tensor]:
        """Detections from :meth:`outputs` (one NMS over all scales' candidates)."""
        candidates = []
        for (side, _, anchors, _), out in zip(self.passes, outputs):
            cand = top_candidates(out, anchors, self.eval_cfg, self.factors, side)
            if side != self.image_size:
                cand = {**cand, "boxes": cand["boxes"] * (self.image_size / side)}
            candidates.append(cand)
        return select_detections(merge_candidates(candidates), self.eval_cfg, self.image_size)

    def __call__(self, images) -> dict[str, tf.Tensor]:
        return self.decode(self.outputs(images))
