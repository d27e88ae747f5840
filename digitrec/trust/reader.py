"""A reading with its trust attached: the digit, calibrated probabilities, and "not a digit".

    reader = TrustReader(run)               # loads the model, traces it, loads/fits the sidecars
    r = reader.read(to_mnist(canvas))       # Reading: digit, probs, calibrated, not_a_digit, score
    r.to_dict()                             # JSON for `predict --json`
    flag, score = not_a_digit(run, image28) # the same through a small per-process cache

One model pass gives the probabilities and the features the detector needs, so the trust
checks add only NumPy work to a reading (``bench/bench_trust.py`` measures it).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from digitrec.preprocess import Preprocessed
from digitrec.trust.calibration import apply_temperature, run_temperature
from digitrec.trust.ood import OodSettings, calibrate_ood
from digitrec.trust.store import file_sha256
from digitrec.trust.tap import ModelTap

READERS_KEPT = 4   # TrustReaders cached per process by not_a_digit (each holds a model)


@dataclass(frozen=True, eq=False)
class Reading:
    """One image read with trust.

    Attributes:
        digit: the arg-max class (the same with or without calibration).
        probs: float32 [C], the model's own probabilities.
        calibrated: float32 [C], with the run's temperature applied.
        temperature: the run's fitted temperature.
        not_a_digit: True when the detector says the image is not a digit at all.
        score: the detector's log-odds past its threshold; > 0 means "not a digit".
    """
    digit: int
    probs: np.ndarray
    calibrated: np.ndarray
    temperature: float
    not_a_digit: bool
    score: float

    def to_dict(self) -> dict:
        """JSON-ready: digit, probabilities (calibrated), raw_probabilities, temperature,
        not_a_digit, score (null when infinite: an image without ink)."""
        return {"digit": self.digit,
                "probabilities": [round(float(p), 6) for p in self.calibrated],
                "raw_probabilities": [round(float(p), 6) for p in self.probs],
                "temperature": round(self.temperature, 4),
                "not_a_digit": self.not_a_digit,
                "score": round(self.score, 4) if np.isfinite(self.score) else None}

    def describe(self) -> str:
        """One line for people: "7 (p=0.98)" or "not a digit (looks most like 8, p=0.61)"."""
        p = float(self.calibrated[self.digit])
        if self.not_a_digit:
            return f"not a digit (looks most like {self.digit}, p={p:.2f})"
        return f"{self.digit} (p={p:.2f})"


class TrustReader:
    """A run's model with its temperature and "not a digit" detector, ready to read.

    Building one loads the model and, on the run's first use, fits and stores its sidecars
    (~20 s for the detector on a 2-core CPU; the temperature takes well under a second).
    Thread-safe after construction. Cache one per run (``st.cache_resource``).

    Args:
        run: a complete ``digitrec.runs.Run``.
        model: the run's loaded keras.Model, when the caller already holds it.
        settings: ``OodSettings`` of the detector (default: the standard ones).
        lite: read single images through LiteRT (``digitrec.lite``), when it reproduces the
            model: for interactive readers that live long (the Sketch page), not for one-off
            commands (the conversion costs ~0.4 s once).
    """

    def __init__(self, run, model=None, settings: OodSettings | None = None, lite: bool = False):
        self.run = run
        self.tap = ModelTap(model if model is not None else run.model(), lite=lite)
        self.detector = calibrate_ood(run, settings or OodSettings(), tap=self.tap)
        self.temperature = run_temperature(run)

    def read_batch(self, images) -> list[Reading]:
        """Readings for images float [N,28,28] (or [28,28]) in [0,1]."""
        x = np.asarray(images, np.float32)
        probs, logits, feats = self.tap(x)
        flags, scores = self.detector.score(feats, logits, probs, x.reshape(len(probs), 28, 28))
        calibrated = apply_temperature(probs, self.temperature)
        return [Reading(int(p.argmax()), p, c, self.temperature, bool(f), float(s))
                for p, c, f, s in zip(probs, calibrated, flags, scores, strict=True)]

    def read(self, image) -> Reading:
        """Read one image: a ``Preprocessed`` (from ``to_mnist``) or a float [28,28] in [0,1].

        Raises:
            ValueError: for a blank ``Preprocessed`` (nothing drawn): show "draw a digit".
        """
        if isinstance(image, Preprocessed):
            if image.blank:
                raise ValueError(f"nothing to read: {image.reason or 'the image is blank'}; "
                                 "draw or upload a digit first")
            image = image.image
        return self.read_batch(np.asarray(image, np.float32)[None])[0]

    def not_a_digit(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(flags bool [N], scores float [N]) for images float [N,28,28] in [0,1]."""
        x = np.asarray(images, np.float32).reshape(-1, 28, 28)
        flags, scores = [], []
        for i in range(0, len(x), 1024):
            chunk = x[i:i + 1024]
            probs, logits, feats = self.tap(chunk)
            f, s = self.detector.score(feats, logits, probs, chunk)
            flags.append(f)
            scores.append(s)
        if not flags:
            return np.zeros(0, bool), np.zeros(0)
        return np.concatenate(flags), np.concatenate(scores)


_READERS: OrderedDict = OrderedDict()
_LOCK = threading.Lock()


def reader_for(run) -> TrustReader:
    """A ``TrustReader`` for ``run``, cached per process (the last READERS_KEPT runs) and
    rebuilt when the run's model file changes."""
    key = (str(run.path), file_sha256(run.path / "model.keras"))
    with _LOCK:
        if key in _READERS:
            _READERS.move_to_end(key)
            return _READERS[key]
    reader = TrustReader(run)
    with _LOCK:
        _READERS[key] = reader
        while len(_READERS) > READERS_KEPT:
            _READERS.popitem(last=False)
    return reader


def not_a_digit(run, image) -> tuple[bool, float]:
    """Is ``image`` (float [28,28] in [0,1], as ``to_mnist`` gives) not a digit, for ``run``'s
    model? Returns (flag, score): score is the detector's log-odds past the run's threshold,
    so ``flag == (score > 0)``."""
    r = reader_for(run).read(image)
    return r.not_a_digit, r.score


def not_a_digit_batch(run, images) -> tuple[np.ndarray, np.ndarray]:
    """(flags bool [N], scores float [N]) for images float [N,28,28] in [0,1]."""
    return reader_for(run).not_a_digit(images)
