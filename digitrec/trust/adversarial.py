"""Adversarial examples: how little must a digit change before the model reads it otherwise?

    attacker = Attacker(run.model())                      # traced once; cache it per run
    adv = attacker.attack(image28, epsilon=40, method="fgsm", target=3)   # the slider
    adv = attacker.smallest_epsilon(image28)              # the least epsilon that flips it
    adv.original, adv.perturbation, adv.adversarial, adv.original_digit, adv.adversarial_digit
    eps = attacker.robustness(images)                     # smallest epsilon per image
    compare_robustness(run_a, run_b, n=100)               # median epsilon of each, same digits

Epsilon is in pixel units, 0-255: every pixel may move by at most epsilon/255 (the L-infinity
ball), and the image stays in [0, 1].

- FGSM (Goodfellow et al., 2015): one step of size epsilon along the sign of the gradient of
  the loss with respect to the pixels.
- PGD (Madry et al., 2018): ``steps`` smaller steps (2.5 * epsilon / steps each), projected
  back into the ball after each; it stops at the first step that succeeds.
- Untargeted, the loss is the cross-entropy of the model's own reading (pushed up); targeted
  ("make it read 3"), the cross-entropy of the target (pushed down). Gradients are taken on
  the logits (``tap.head``): a saturated softmax has no gradient.

The smallest epsilon is found by bisection, 16 ways at once: each round tries 16 evenly spaced
epsilons of the current interval as one batch through the model and keeps the interval
between the last failure and the first success, until it is ``resolution`` wide (two rounds
from 0-255 to 1 pixel unit). The answer flips the model, and an attack ``resolution`` smaller
does not. For FGSM the gradient is taken once; for PGD each of the 16 runs its own steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from digitrec.preprocess import scale
from digitrec.trust.tap import as_batch, head

METHODS = ("fgsm", "pgd")
MAX_EPSILON = 255.0
PROBES = 16            # epsilons tried per bisection round, as one batch
PGD_STEPS = 10
PGD_STEP_FACTOR = 2.5  # each PGD step is this * epsilon / steps (Madry et al.'s choice)


@dataclass(frozen=True, eq=False)
class Adversarial:
    """One attack on one image.

    Attributes:
        original: float32 [28,28] in [0,1]; adversarial: the attacked image (same range).
        perturbation: adversarial - original, float32 [28,28] in [-epsilon/255, epsilon/255]
            (amplify it for display, e.g. 0.5 + perturbation * 255 / (2 * epsilon)).
        epsilon: the budget used, in 0-255 pixel units.
        method: "fgsm" or "pgd"; target: the class aimed at, or None (any other reading).
        original_digit / adversarial_digit: the readings; original_probs / adversarial_probs:
            float32 [C] probabilities.
        success: True when the adversarial image is read as intended (another digit, or the
            target); False when no epsilon up to the maximum did it.
    """
    original: np.ndarray
    adversarial: np.ndarray
    perturbation: np.ndarray
    epsilon: float
    method: str
    target: int | None
    original_digit: int
    adversarial_digit: int
    original_probs: np.ndarray
    adversarial_probs: np.ndarray
    success: bool


class Attacker:
    """FGSM and PGD against one Keras model, traced once (cache one per model).

    Args:
        model: a built keras.Model taking float32 [N,28,28,1] in [0,1].
    """

    def __init__(self, model):
        self.model = model
        scores, self.logits_kind_ = head(model)
        spec = tf.TensorSpec([None, 28, 28, 1], tf.float32)

        def forward(x):
            return tf.nn.softmax(scores(x)[0])

        def direction(x, labels, sign):
            # sign +1: raise the loss of `labels` (untargeted); -1: lower it (targeted).
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = scores(x)[0]
                loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
            grad = tape.gradient(loss, x)
            return tf.sign(grad) * sign[:, None, None, None], tf.nn.softmax(logits)

        self._forward = tf.function(forward, input_signature=[spec], autograph=False)
        self._direction = tf.function(direction, autograph=False, input_signature=[
            spec, tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32)])

    # ------------------------------------------------------------------ batched primitives

    def probabilities(self, x) -> np.ndarray:
        """float32 [N,C] for images [N,28,28,1] in [0,1]."""
        return self._forward(tf.constant(as_batch(x))).numpy()

    def _perturb(self, x, eps, labels, sign, method, steps):
        """Adversarial images for a batch: x [N,28,28,1], eps [N] in 0..1 units, labels [N]
        (the reading to leave, or the target), sign [N] (+1 leave, -1 reach)."""
        x = tf.constant(x, tf.float32)
        labels = tf.constant(labels, tf.int32)
        sign = tf.constant(sign, tf.float32)
        radius = tf.constant(eps, tf.float32)[:, None, None, None]
        if method == "fgsm":
            d, _ = self._direction(x, labels, sign)
            return tf.clip_by_value(x + radius * d, 0.0, 1.0).numpy()
        step = PGD_STEP_FACTOR * radius / steps
        adv = x
        done = tf.zeros([x.shape[0]], tf.bool)
        for i in range(steps + 1):
            d, probs = self._direction(adv, labels, sign)
            reading = tf.argmax(probs, axis=1, output_type=tf.int32)
            done = done | tf.where(sign > 0, reading != labels, reading == labels)
            if i == steps:
                break
            moved = tf.clip_by_value(tf.clip_by_value(adv + step * d, x - radius, x + radius),
                                     0.0, 1.0)
            adv = tf.where(done[:, None, None, None], adv, moved)  # stop at the first success
        return adv.numpy()

    # ------------------------------------------------------------------ the public face

    def attack(self, image, epsilon: float, method: str = "fgsm", target: int | None = None,
               steps: int = PGD_STEPS) -> Adversarial:
        """Attack one image with budget ``epsilon`` (0-255 pixel units).

        Args:
            image: float [28,28] in [0,1] (a ``Preprocessed.image`` or a scaled test digit).
            epsilon: float, the largest change of any pixel, 0-255.
            method: "fgsm" (one step) or "pgd" (``steps`` projected steps).
            target: int class to make it read, or None for any other digit.
            steps: int, PGD steps (default 10).
        """
        x, reading, probs, labels, sign = self._setup(image, method, target)
        adv = self._perturb(x, np.array([_units(epsilon)], np.float32), labels, sign, method,
                            steps)
        return self._result(x[0], adv[0], epsilon, method, target, reading, probs)

    def smallest_epsilon(self, image, method: str = "fgsm", target: int | None = None,
                         steps: int = PGD_STEPS, max_epsilon: float = MAX_EPSILON,
                         resolution: float = 1.0) -> Adversarial:
        """The least epsilon (0-255, to within ``resolution``) whose attack changes the
        reading (or, with ``target``, makes it read ``target``), with that attack.

        ``success`` is False (and ``epsilon`` is ``max_epsilon``) when even the largest
        budget does not do it. A digit already read as the target needs epsilon 0.
        """
        x, reading, probs, labels, sign = self._setup(image, method, target)
        if target is not None and reading == target:
            return self._result(x[0], x[0], 0.0, method, target, reading, probs)
        eps = self._search(x, labels, sign, method, steps, max_epsilon, resolution)[0]
        found = np.isfinite(eps)
        budget = float(eps) if found else float(max_epsilon)
        adv = self._perturb(x, np.array([_units(budget)], np.float32), labels, sign, method,
                            steps)
        return self._result(x[0], adv[0], budget, method, target, reading, probs)

    def robustness(self, images, method: str = "fgsm", steps: int = PGD_STEPS,
                   max_epsilon: float = MAX_EPSILON, resolution: float = 1.0) -> np.ndarray:
        """float64 [N]: the smallest epsilon that changes each image's reading (untargeted),
        inf where none up to ``max_epsilon`` does. All images are searched together."""
        x = as_batch(images)
        readings = self.probabilities(x).argmax(1).astype(np.int32)
        return self._search(x, readings, np.ones(len(x), np.float32), method, steps,
                            max_epsilon, resolution)

    # ------------------------------------------------------------------ helpers

    def _setup(self, image, method, target):
        if method not in METHODS:
            raise ValueError(f"unknown attack {method!r}; use one of {', '.join(METHODS)}")
        x = as_batch(image)
        if len(x) != 1:
            raise ValueError(f"attack one image at a time, got {len(x)}; use robustness() "
                             "for many")
        probs = self.probabilities(x)[0]
        reading = int(probs.argmax())
        if target is not None and not 0 <= int(target) < len(probs):
            raise ValueError(f"target must be a class 0..{len(probs) - 1}, got {target}")
        labels = np.array([reading if target is None else int(target)], np.int32)
        sign = np.array([1.0 if target is None else -1.0], np.float32)
        return x, reading, probs, labels, sign

    def _search(self, x, labels, sign, method, steps, max_epsilon, resolution):
        """Bisection, PROBES ways at once, for every image of x [N,28,28,1] together.

        Per image: ``low`` is an epsilon known to fail (0: no attack at all), ``high`` one
        known to succeed once ``found``. Each round tries PROBES evenly spaced epsilons in
        (low, high] and keeps (last failure before the first success, first success].
        """
        n = len(x)
        low = np.zeros(n)
        high = np.full(n, float(max_epsilon))
        found = np.zeros(n, bool)
        frac = np.arange(1, PROBES + 1) / PROBES
        rows = np.arange(n)                       # the first round tries every image
        while len(rows):
            eps = low[rows, None] + (high[rows] - low[rows])[:, None] * frac[None]
            eps[:, -1] = high[rows]
            adv = self._perturb(np.repeat(x[rows], PROBES, axis=0),
                                (eps.reshape(-1) / 255.0).astype(np.float32),
                                np.repeat(labels[rows], PROBES), np.repeat(sign[rows], PROBES),
                                method, steps)
            reading = self.probabilities(adv).argmax(1).reshape(len(rows), PROBES)
            wanted = labels[rows, None]
            ok = np.where(sign[rows, None] > 0, reading != wanted, reading == wanted)
            ok[found[rows], -1] = True            # high already succeeded (the same attack)
            for j, r in enumerate(rows):
                hits = np.flatnonzero(ok[j])
                if len(hits) == 0:                # not even max_epsilon: give up on it
                    continue
                k = hits[0]
                found[r] = True
                high[r] = eps[j, k]
                if k > 0:
                    low[r] = eps[j, k - 1]
            rows = np.flatnonzero(found & (high - low > resolution))
        return np.where(found, high, np.inf)

    def _result(self, x, adv, epsilon, method, target, reading, probs) -> Adversarial:
        adv_probs = self.probabilities(adv[None])[0]
        adv_digit = int(adv_probs.argmax())
        success = adv_digit != reading if target is None else adv_digit == int(target)
        return Adversarial(original=x[..., 0].copy(), adversarial=adv[..., 0].copy(),
                           perturbation=(adv - x)[..., 0], epsilon=float(epsilon),
                           method=method, target=None if target is None else int(target),
                           original_digit=reading, adversarial_digit=adv_digit,
                           original_probs=probs, adversarial_probs=adv_probs,
                           success=bool(success))


def _units(epsilon: float) -> float:
    eps = float(epsilon)
    if not 0 <= eps <= MAX_EPSILON:
        raise ValueError(f"epsilon is in pixel units 0..255, got {epsilon}")
    return eps / 255.0


def compare_robustness(run_a, run_b, n: int = 100, method: str = "fgsm", seed: int = 0,
                       steps: int = PGD_STEPS) -> dict:
    """Which of two runs is harder to fool? The smallest epsilon of each, on the same ``n``
    test digits that both read correctly (a random sample, ``seed``).

    Returns:
        dict: ``runs`` [id_a, id_b], ``method``, ``indices`` (test rows used), ``epsilon_a``,
        ``epsilon_b`` (lists; inf where no epsilon up to 255 flipped it), ``median_a``,
        ``median_b``, ``more_robust`` (the run id with the larger median, or None when equal).
    """
    from digitrec.datasets import load_dataset

    if run_a.config.dataset != run_b.config.dataset:
        raise ValueError("compare two runs of the same dataset")
    images, labels = load_dataset(run_a.config.dataset, "test")
    both = (run_a.test_probabilities().argmax(1) == labels) & (
        run_b.test_probabilities().argmax(1) == labels)
    pool = np.flatnonzero(both)
    rows = np.sort(np.random.default_rng(seed).choice(pool, min(n, len(pool)), replace=False))
    x = scale(images[rows])  # float32 [N,28,28,1] in [0,1]
    eps_a = Attacker(run_a.model()).robustness(x, method=method, steps=steps)
    eps_b = Attacker(run_b.model()).robustness(x, method=method, steps=steps)
    med_a, med_b = float(np.median(eps_a)), float(np.median(eps_b))
    return {"runs": [run_a.run_id, run_b.run_id], "method": method,
            "indices": rows.tolist(), "epsilon_a": eps_a.tolist(), "epsilon_b": eps_b.tolist(),
            "median_a": med_a, "median_b": med_b,
            "more_robust": None if med_a == med_b else
            (run_a.run_id if med_a > med_b else run_b.run_id)}
