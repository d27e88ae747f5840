"""Is it a digit at all? A per-run "not a digit" detector, calibrated on held-out digits.

    detector = calibrate_ood(run)                 # made once per run, stored beside it
    flag, score = not_a_digit(run, image28)       # score > 0 <=> flag (log-odds past threshold)
    flags, scores = not_a_digit_batch(run, images)

The method, and why. A classifier trained only on digits has no "none of these" answer: the
shipped starter reads 60 of 60 letters, scribbles and shapes as digits, median p = 0.90. A
plain max-softmax threshold cannot fix it (that 0.90 is as confident as many real digits), and
the energy / max-logit score alone is no better on this model (non-digits often have *larger*
logits than digits: measured AUROC 0.04 on the starter). What does separate them is where an
image lands in the model's own feature space, plus a few ink statistics:

1. the run model's penultimate features (what its last Dense layer sees; a flattened conv map
   can be 4,704 numbers wide), as coordinates in their top 64 principal directions over
   digits, plus how far they lie outside that subspace (the residual); the Mahalanobis
   distance to the nearest class mean in it (tied covariance, Lee et al. 2018); the energy
   (log-sum-exp of the logits), the max logit and log(1 - max p);
2. ink statistics of the 28x28 image: total ink, inked fraction, connected strokes, enclosed
   holes, and the ink box's aspect ratio (a full-width grid or a blob is not a digit);
3. a tiny detector (``TinyMLP``: one hidden layer of 64, in NumPy) trained on these features to
   tell MNIST training digits from generated non-digits (``nondigits.py``'s training kinds:
   letters in DejaVu fonts, spline scribbles, polygons, hatching, spirals, zigzags, circles with
   a cross, symbols, blobs). Both classes are also shown printed on paper and read back through
   ``to_mnist``, and at a coarse resolution (``coarse_scan``), so neither the upload path's
   traces nor blur count as evidence either way;
4. five such detectors (seeds 0-4) are averaged, and the threshold is the ``quantile``
   (default 99.7%) of their score on held-out MNIST training digits (raw, on paper, coarse)
   they never trained on: by construction about 0.3% of digits like those are flagged.

It is judged (``bench/bench_trust.py``, ``tests/test_trust_ood.py``) on non-digits it never
saw: other kinds (capital letters in other fonts, random-walk scribbles, squares, grids, stars,
smileys) drawn with other seeds; on the MNIST test split; and on real scans (scikit-learn's UCI
digits). Measured on the shipped starter (``fast``, 0.993), a shared 2-core CPU: of 300
generated non-digits, 89.7% flagged on the draw the design was chosen on (seed 0) and 86.3% on
a fresh draw (seed 7: capitals 80%, scribbles 58%, squares 86%, grids 100%, stars 94%, smileys
100%); 0.16% of the 10,000 MNIST test digits; 2.1% of the 1,797 real scans (the model misreads
4.6% of those). Letters that are digit shapes (O, I, l, o) are in no set; short squiggles,
often digit-shaped, are reported apart (46-47% flagged).

The detector is fitted per run (it reads that run's features), stored as the sidecar
``trust_ood.npz`` (see ``store.py``), and made again when the model changes. Fitting takes
about 20-70 s on a shared 2-core CPU; the ~20,000 generated training images are
run-independent and cached in ``<cache>/trust/`` (drawing them is most of the first fit), so
later runs pay only for their model pass and the fit. Scoring a reading adds ~0.2 ms of NumPy
to the model pass that the reading makes anyway (``reader.TrustReader`` does both in one go).
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from threadpoolctl import threadpool_limits

from digitrec.datasets import load_dataset
from digitrec.files import atomic_write_bytes
from digitrec.preprocess import scale
from digitrec.trust import nondigits
from digitrec.trust.detector import TinyMLP
from digitrec.trust.store import cache_root, read_sidecar, write_sidecar
from digitrec.trust.tap import ModelTap

OOD_FILE = "trust_ood.npz"
RECIPE = 4          # bump when the features or the training change: stored detectors are redone
IMAGES_VERSION = 1  # bump when nondigits.py draws differently: the cached images are redrawn
SPACE_SAMPLE = 4000  # digits the feature subspace and class Gaussians are fitted on
INK_LEVEL = 0.3     # a pixel brighter than this counts as ink for the ink statistics


@dataclass(frozen=True)
class OodSettings:
    """How a detector is made. Frozen: its JSON is part of the stored detector.

    Attributes:
        digits_fit: MNIST training digits the detector learns from (default 8000).
        digits_holdout: other MNIST training digits the threshold is set on (default 3000).
        inked: how many of each of those two sets are also printed on paper and read back
            (default 2000 / a third as many for the hold-out).
        coarse: how many are also seen at a coarse resolution (same split as ``inked``).
        nondigits: generated training non-digits (default 8000; half again seen coarse).
        quantile: the threshold is this quantile of held-out digit scores (default 0.997).
        members: detectors trained with different seeds whose log-odds are averaged
            (default 5: one alone moves the real-scan flag rate by +-2 points from seed to
            seed; the average is steadier).
        hidden: hidden units of each detector (default 64).
        epochs: their training passes (default 40).
        seed: random seed of the samples, the drawings and the detector (default 0).
    """
    digits_fit: int = 8000
    digits_holdout: int = 3000
    inked: int = 2000
    coarse: int = 3000
    nondigits: int = 8000
    quantile: float = 0.997
    members: int = 5
    hidden: int = 64
    epochs: int = 40
    seed: int = 0

    def key(self) -> str:
        """Names a detector: every setting and the RECIPE."""
        return _digest({**asdict(self), "recipe": RECIPE})

    def images_key(self) -> str:
        """Names its training images: the settings that decide them and IMAGES_VERSION."""
        fields = ("digits_fit", "digits_holdout", "inked", "coarse", "nondigits", "seed")
        return _digest({**{f: getattr(self, f) for f in fields}, "images": IMAGES_VERSION})


def _digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- features

def ink_statistics(images) -> np.ndarray:
    """float32 [N,5] per 28x28 image: total ink (sum of pixels), inked fraction, number of
    8-connected strokes, number of enclosed holes, ink-box width / height."""
    x = np.asarray(images, np.float32).reshape(-1, 28, 28)
    out = np.zeros((len(x), 5), np.float32)
    eight = np.ones((3, 3), bool)
    four = ndimage.generate_binary_structure(2, 1)
    for i, a in enumerate(x):
        mask = a > INK_LEVEL
        if not mask.any():
            continue
        _, strokes = ndimage.label(mask, structure=eight)
        _, regions = ndimage.label(~mask, structure=four)  # one outside + the holes
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        out[i] = (a.sum(), mask.mean(), strokes, max(regions - 1, 0),
                  (cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1))
    return out


class OodDetector:
    """The fitted parts of a detector: a principal subspace of the model's digit features,
    class means and whitening in it (for the Mahalanobis distance), the ``TinyMLP`` and the
    threshold. Build with ``fit_space`` then ``fit``, or ``from_arrays``."""

    def fit_space(self, feats, labels, dims: int = 64, seed: int = 0) -> OodDetector:
        """Fit the feature subspace and the class Gaussians on digits' features.

        Penultimate features can be wide (a flattened 7x7x96 map: 4,704 numbers); the digits
        live near a much smaller subspace. Its top ``dims`` principal directions are kept, and
        how far a feature vector lies *outside* it (the residual) becomes a score of its own.

        Args:
            feats: float [N,D] penultimate features of digits; labels: int [N] their classes.
            dims: int, principal directions kept (default 64; all of them when D is smaller).
            seed: int, random state of the randomized SVD.
        """
        from sklearn.utils.extmath import randomized_svd

        f = np.asarray(feats, np.float64)
        self.centre_ = f.mean(0)
        k = min(dims, f.shape[1], len(f) - 1)
        _, _, vt = randomized_svd(f - self.centre_, k, n_iter=4, random_state=seed)
        self.components_ = vt                                      # [k, D]
        z = (f - self.centre_) @ vt.T
        y = np.asarray(labels)
        self.means_ = np.stack([z[y == c].mean(0) for c in np.unique(y)])
        centred = z - self.means_[np.searchsorted(np.unique(y), y)]
        cov = centred.T @ centred / len(centred)
        cov += 1e-3 * np.trace(cov) / len(cov) * np.eye(len(cov))  # shrink: stable inverse
        self.whiten_ = np.linalg.cholesky(np.linalg.inv(cov))      # |(z-m) W|^2 = Mahalanobis^2
        return self._prepare()

    def _prepare(self) -> OodDetector:
        """Derived arrays for fast scoring: the projection in float32 (half the memory
        traffic of the widest product), the class centres whitened, the members stacked."""
        self._centre32 = self.centre_.astype(np.float32)
        self._components32 = np.ascontiguousarray(self.components_.T, dtype=np.float32)
        self._centres = self.means_ @ self.whiten_
        if getattr(self, "members_", None):
            self._stacked = _stack(self.members_)
        return self

    def fit(self, X, is_nondigit, holdout_X, settings: OodSettings) -> OodDetector:
        """Train the detector on feature rows ``X`` (from ``features``) and set the threshold
        at ``settings.quantile`` of the held-out digits' rows ``holdout_X``."""
        y = np.asarray(is_nondigit, np.float64)
        self.members_ = [TinyMLP(hidden=settings.hidden, epochs=settings.epochs,
                                 seed=settings.seed + i).fit(X, y)
                         for i in range(settings.members)]
        self._prepare()
        self.threshold_ = float(np.quantile(self.log_odds(holdout_X), settings.quantile))
        return self

    def log_odds(self, X) -> np.ndarray:
        """float64 [N]: the members' mean log-odds of "not a digit" for detector inputs X."""
        w1, b1, w2, b2 = self._stacked
        return np.maximum(np.asarray(X, np.float64) @ w1 + b1, 0.0) @ w2 + b2

    def features(self, feats, logits, probs, images) -> np.ndarray:
        """[N, k + 11] detector inputs: the features' coordinates in the digit subspace, the
        log residual outside it, the log Mahalanobis distance to the nearest class, the energy
        (log-sum-exp of the logits), the max logit, log(1 - max p), then ink statistics."""
        f = np.asarray(feats, np.float32) - self._centre32
        z = (f @ self._components32).astype(np.float64)
        residual = np.maximum(np.einsum("ij,ij->i", f, f, dtype=np.float64)
                              - (z * z).sum(1), 0.0)
        w = z @ self.whiten_
        c = self._centres
        d2 = (w * w).sum(1)[:, None] - 2 * w @ c.T + (c * c).sum(1)[None]
        logits = np.asarray(logits, np.float64)
        top = logits.max(1)
        energy = top + np.log(np.exp(logits - top[:, None]).sum(1))  # log-sum-exp
        confidence = np.minimum(np.asarray(probs, np.float64).max(1), 1 - 1e-7)
        scores = np.stack([np.log1p(residual), np.log(np.maximum(d2.min(1), 1e-9)), energy,
                           top, np.log1p(-confidence)], axis=1)
        return np.concatenate([z, scores, ink_statistics(images)], axis=1)

    def score(self, feats, logits, probs, images) -> tuple[np.ndarray, np.ndarray]:
        """(flags bool [N], scores float [N]): score = the detector's log-odds of "not a
        digit" minus the threshold, so a score above 0 means "not a digit". An image without
        any ink is flagged with score +inf."""
        scores = self.log_odds(self.features(feats, logits, probs, images)) - self.threshold_
        empty = np.asarray(images).reshape(len(scores), -1).max(1) <= 0
        scores[empty] = np.inf
        return scores > 0, scores

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"centre": self.centre_, "components": self.components_, "means": self.means_,
                "whiten": self.whiten_, "threshold": np.array(self.threshold_),
                "members": np.array(len(self.members_)),
                **{k: v for i, m in enumerate(self.members_)
                   for k, v in m.to_arrays(f"mlp{i}_").items()}}

    @classmethod
    def from_arrays(cls, arrays) -> OodDetector:
        det = cls()
        for name in ("centre", "components", "means", "whiten"):
            setattr(det, name + "_", np.asarray(arrays[name], np.float64))
        det.threshold_ = float(arrays["threshold"])
        det.members_ = [TinyMLP.from_arrays(arrays, f"mlp{i}_")
                        for i in range(int(arrays["members"]))]
        det._prepare()
        return det


def _stack(members: list[TinyMLP]):
    """The members as one wider network with the same mean output: each one's input
    standardisation folded into its first layer, hidden layers side by side, output layers
    averaged. One pair of matrix products instead of one per member (a reading is one row)."""
    w1 = np.concatenate([m.W1_ / m.scale_[:, None] for m in members], axis=1)
    b1 = np.concatenate([m.b1_ - (m.mean_ / m.scale_) @ m.W1_ for m in members])
    w2 = np.concatenate([m.W2_[:, 0] for m in members]) / len(members)
    b2 = float(np.mean([m.b2_[0] for m in members]))
    return w1, b1, w2, b2


# --------------------------------------------------------------------------- training data

def training_images(settings: OodSettings = OodSettings()) -> dict[str, np.ndarray]:
    """The run-independent images a detector learns from, drawn once and cached on disk.

    Returns a dict: ``fit_index`` / ``holdout_index`` (rows of MNIST train), ``fit_extra`` /
    ``holdout_extra`` (uint8 digits on paper and coarse, with ``*_extra_labels``), and
    ``nondigits`` (uint8, training kinds, half of them also coarse).
    """
    path = cache_root() / "trust" / f"ood-images-{settings.images_key()}.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError):
        pass
    images, labels = load_dataset("mnist", "train")
    order = np.random.default_rng(settings.seed).permutation(len(images))
    fit = order[:settings.digits_fit]
    hold = order[settings.digits_fit:settings.digits_fit + settings.digits_holdout]

    def extras(rows, n_ink, n_coarse, seed):
        ink = nondigits.ink_on_paper(images[rows[:n_ink]])
        coarse = nondigits.coarse_scan(images[rows[n_ink:n_ink + n_coarse]], seed=seed)
        return (np.concatenate([ink, coarse]),
                labels[np.r_[rows[:n_ink], rows[n_ink:n_ink + n_coarse]]])

    fit_x, fit_y = extras(fit, settings.inked, settings.coarse, settings.seed)
    hold_x, hold_y = extras(hold, settings.inked // 3, settings.coarse // 3, settings.seed + 1)
    drawn, _ = nondigits.nondigit_images("train", settings.nondigits, seed=settings.seed)
    coarse = nondigits.coarse_scan(drawn[: settings.nondigits // 2], seed=settings.seed + 2)
    data = {"fit_index": fit, "holdout_index": hold,
            "fit_extra": _to_uint8(fit_x), "fit_extra_labels": fit_y,
            "holdout_extra": _to_uint8(hold_x), "holdout_extra_labels": hold_y,
            "nondigits": _to_uint8(np.concatenate([drawn, coarse]))}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **data)
    atomic_write_bytes(path, buffer.getvalue())
    return data


def _to_uint8(x) -> np.ndarray:
    return np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)


# --------------------------------------------------------------------------- per run

def calibrate_ood(run, settings: OodSettings = OodSettings(), force: bool = False,
                  tap: ModelTap | None = None) -> OodDetector:
    """The run's "not a digit" detector: read from its sidecar, or fitted and stored.

    Args:
        run: a ``digitrec.runs.Run`` (complete) of an MNIST model.
        settings: ``OodSettings``; a stored detector made with other settings is redone.
        force: fit again even when a valid one is stored.
        tap: a ``ModelTap`` of the run's model, to reuse (default: one is built).

    Returns:
        The ``OodDetector``; ``.info_`` holds the settings, the threshold, the flag rate on
        held-out digits and the fitting time.

    Raises:
        ValueError: for a run of another dataset than MNIST.
    """
    dataset = getattr(getattr(run, "config", None), "dataset", "mnist")
    if dataset != "mnist":
        raise ValueError(f"run {run.run_id} reads {dataset}; the not-a-digit check is made for "
                         "digit (MNIST) runs only: use an MNIST run for it")
    if not force:
        stored = read_sidecar(run, OOD_FILE)
        if stored is not None and str(stored.get("settings_key")) == settings.key():
            det = OodDetector.from_arrays(stored)
            det.info_ = json.loads(str(stored["info"]))
            return det
    started = time.perf_counter()
    tap = tap or ModelTap(run.model())
    data = training_images(settings)
    images, labels = load_dataset("mnist", "train")
    raw_fit = images[data["fit_index"]]
    fit_labels = labels[data["fit_index"]]
    det = OodDetector()
    with threadpool_limits(limits=1):  # small matrices; threads only fight on a shared CPU
        space = slice(0, min(len(raw_fit), SPACE_SAMPLE))
        det.fit_space(tap(raw_fit[space])[2], fit_labels[space], seed=settings.seed)
        digits = _detector_inputs(det, tap, raw_fit, data["fit_extra"])
        others = _detector_inputs(det, tap, data["nondigits"])
        held = _detector_inputs(det, tap, images[data["holdout_index"]], data["holdout_extra"])
        det.fit(np.concatenate([digits, others]), np.r_[np.zeros(len(digits)), np.ones(len(others))],
                held, settings)
        held_flagged = float(np.mean(det.log_odds(held) > det.threshold_))
        train_flagged = float(np.mean(det.log_odds(others) > det.threshold_))
    det.info_ = {"settings": asdict(settings), "recipe": RECIPE, "threshold": det.threshold_,
                 "holdout_digits": int(len(held)), "holdout_flagged": held_flagged,
                 "train_nondigits": int(len(others)), "train_nondigits_flagged": train_flagged,
                 "fit_seconds": round(time.perf_counter() - started, 2)}
    write_sidecar(run, OOD_FILE, {**det.to_arrays(), "settings_key": np.array(settings.key()),
                                  "info": np.array(json.dumps(det.info_))})
    return det


def _detector_inputs(det: OodDetector, tap: ModelTap, *image_sets, chunk: int = 1024):
    """Detector input rows for uint8 image sets, in chunks (wide features stay small)."""
    rows = []
    for images in image_sets:
        for i in range(0, len(images), chunk):
            x = scale(images[i:i + chunk])  # float32 [N,28,28,1] in [0,1]
            probs, logits, feats = tap(x)
            rows.append(det.features(feats, logits, probs, x))
    return np.concatenate(rows)
