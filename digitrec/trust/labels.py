"""Suspect labels: which images of a dataset are probably mislabelled, ranked with cleanlab.

    ranking = find_suspects("mnist", "test")   # from the stored test predictions of the runs
    ranking.top(30)                            # [Suspect(index, label, suggested, score, ...)]
    ranking.runs, ranking.skipped              # which runs were used; which not, and why
    job = submit_cross_validation(CrossValConfig("mnist"))   # training split: background job
    find_suspects("mnist", "train")            # once it is complete (LabelError before)
    excluded_indices("mnist", 100)             # the top-100 training suspects, for retraining

How the ranking is made: confident learning (Northcutt et al.; the cleanlab library) needs
out-of-sample predicted probabilities, a model's view of images it did not train on. For the
test split these are the stored ``test_probs.npy`` of every complete run of the dataset whose
accuracy is near the best one (several runs, of different architectures, give a steadier
estimate; the package ships reference runs for that, `digitrec/reference_runs`). Several runs
are pooled by the geometric mean of their probabilities (``pool_probs``: a label survives only
if no good model is sure it is wrong). For the training split they come from k-fold
cross-validation (`digitrec.trust.label_jobs`). cleanlab's label-quality score (the
"self-confidence", the probability the models give the label the dataset gives) ranks every
image; low means suspect. The suggested label is what the pooled models predict.
A suspect is a candidate for a person to look at, not proof: some are bad handwriting that the
label gets right.

Measured with bench/bench_suspects.py on a shared 2-core CPU: ranking the 10,000 MNIST test
images from stored predictions takes 0.03-0.05 s (plus cleanlab's import, about 2 s once per
process, and the store's listing of the runs). With 1% of the 60,000 training labels flipped at
random, the default cross-validation (`fast` family, 4 folds, 1 epoch: about 60 CPU seconds)
puts 92% flips in the top 600.
"""
from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass, field

import numpy as np

from digitrec.datasets import DATASETS, load_dataset
from digitrec.runs import RunStore
from digitrec.trust.label_jobs import (
    CrossValConfig,
    LabelError,
    LabelJob,
    load_result,
    submit_cross_validation,
)

__all__ = ["Suspect", "SuspectRanking", "LabelError", "rank_labels", "find_suspects",
           "SPLITS", "HOW_IT_WORKS", "excluded_indices", "without_suspects", "corrections_csv",
           "CrossValConfig", "LabelJob", "submit_cross_validation", "ACCURACY_MARGIN", "pool_probs"]

METHOD = "self_confidence"  # cleanlab's default score; "normalized_margin" measured no better
# A run joins the test-split estimate when its accuracy is within this of the best run's, so a
# weak model (the notebook's softmax at 0.92, its MLPs at 0.96) does not drown out the good
# ones, while the notebook's CNNs (0.978-0.981 in the lesson bundle) count: a different
# architecture doubts different images. Measured on MNIST with the 15 confirmed test errors
# (bench/bench_suspects.py): the starter alone puts 6 in the top 30; with those CNNs and the
# reference runs (ten runs), 11.
ACCURACY_MARGIN = 0.02
PROB_SUM_TOLERANCE = 1e-2  # rows of stored probabilities must sum to 1 within this
SPLITS = ("test", "train")
# One paragraph for people, shown beside a ranking (the CLI's text output, the dashboard's view).
HOW_IT_WORKS = (
    "Each image is scored by how much trained models believe the label the dataset gives it, "
    "using predictions on images those models never trained on (the test split for stored runs, "
    "cross-validation for the training split). cleanlab's label-quality score ranks the images: "
    "the lowest scores are the likeliest label errors, and the suggested label is what the "
    "models predict instead. A suspect is a candidate for a person to look at, not proof: some "
    "are just badly written digits whose label is right.")


@dataclass(frozen=True)
class Suspect:
    """One image whose label may be wrong.

    Attributes:
        index: its position in the split (the dataset's own order).
        label: the label the dataset gives it.
        suggested: the class the models predict (argmax of the pooled probabilities).
        score: cleanlab's label-quality score in [0, 1]; lower is more suspect.
        probabilities: the pooled class probabilities (``pool_probs``), one per class.
        flagged: True if cleanlab's `find_label_issues` calls it a label issue outright. That
            filter is strict: on a training split with flipped labels it catches most flips,
            on MNIST's test split under several confident models it flags almost nothing, so
            the ranking (score), not this flag, is what to show.
    """
    index: int
    label: int
    suggested: int
    score: float
    probabilities: tuple = ()
    flagged: bool = False

    def to_dict(self, probabilities: bool = False) -> dict:
        """{index, label, suggested, score, flagged} (+ probabilities), JSON-ready."""
        out = dict(index=self.index, label=self.label, suggested=self.suggested,
                   score=round(self.score, 6), flagged=self.flagged)
        if probabilities:
            out["probabilities"] = [round(p, 6) for p in self.probabilities]
        return out


@dataclass(frozen=True, eq=False)
class SuspectRanking:
    """Every image of a split, ranked most suspect first.

    Attributes:
        dataset, split: what was ranked ("test" or "train").
        indices: int64 [N] split index of each row (all of them, in order, unless the training
            split was cross-validated on a subset).
        labels: int64 [N] given labels; probs: float32 [N, C] pooled probabilities;
        scores: float64 [N] label quality (lower = more suspect); flagged: bool [N].
        order: int64 [N] row positions, most suspect first (ties by index: deterministic).
        runs: run ids whose predictions were used (test), or the cross-validation key (train).
        skipped: (run id, reason) of runs left out.
    """
    dataset: str
    split: str
    indices: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    scores: np.ndarray
    flagged: np.ndarray
    order: np.ndarray
    runs: tuple = ()
    skipped: tuple = field(default=())

    def __len__(self) -> int:
        return len(self.order)

    def suspect(self, row: int) -> Suspect:
        p = self.probs[row]
        return Suspect(int(self.indices[row]), int(self.labels[row]), int(p.argmax()),
                       float(self.scores[row]), tuple(float(v) for v in p), bool(self.flagged[row]))

    def top(self, n: int = 30) -> list[Suspect]:
        """The `n` most suspect images, most suspect first."""
        return [self.suspect(int(r)) for r in self.order[:max(0, int(n))]]

    def top_indices(self, n: int) -> np.ndarray:
        """Split indices of the `n` most suspect images, most suspect first."""
        return self.indices[self.order[:max(0, int(n))]]

    def class_counts(self, n: int | None = None) -> np.ndarray:
        """int64 [C]: how many of the top `n` suspects (None: of those cleanlab flags) carry each
        given label."""
        rows = self.order[:n] if n is not None else np.flatnonzero(self.flagged)
        return np.bincount(self.labels[rows], minlength=self.probs.shape[1]).astype(np.int64)

    def records(self, n: int = 30, probabilities: bool = False) -> list[dict]:
        """`top(n)` as JSON-ready dicts (what `suspects --json` prints)."""
        return [s.to_dict(probabilities) for s in self.top(n)]


# Probabilities are clipped to this before their logarithm: about what float16 can hold (the
# lesson bundle stores its test probabilities as float16, where anything below ~6e-8 is 0), so one
# run's rounding to zero is not a stronger veto than another's tiny value. (1e-12 and 1e-6
# rank the 15 confirmed MNIST errors identically.)
POOL_FLOOR = 1e-7


def pool_probs(probs_list) -> np.ndarray:
    """One float64 [N, C] estimate from several models' probabilities: their geometric mean,
    renormalised per row (a "product of experts", the average of log-probabilities).

    Why not the arithmetic mean (cleanlab's accuracy-weighted ensemble score ranks alike): a
    label error is an image that some good model is sure belongs elsewhere, while another
    model may have learnt to accept the wrong label. The arithmetic mean lets that one model's
    0.9 outvote the others' 0.01; the geometric mean keeps the doubt. Measured on the MNIST
    test split with the 15 label errors people confirmed, over every subset of 2-6 good runs
    (bench/bench_suspects.py): 8.5 of them in the top 30 on average with the geometric mean,
    7.4 with cleanlab's ensemble score.
    """
    if isinstance(probs_list, np.ndarray):
        probs_list = [probs_list]
    if len(probs_list) == 0:
        raise LabelError("no model's probabilities to pool")
    stacked = np.asarray([np.asarray(p, dtype=np.float64) for p in probs_list])
    logs = np.log(np.clip(stacked, POOL_FLOOR, 1.0)).mean(axis=0)
    logs -= logs.max(axis=1, keepdims=True)  # exp() of large negatives only: no overflow
    pooled = np.exp(logs)
    return pooled / pooled.sum(axis=1, keepdims=True)


def rank_labels(labels, probs_list):
    """Score every example with cleanlab. Returns (scores [N], flagged bool [N], order [N]).

    Args:
        labels: int [N] given labels.
        probs_list: one float [N, C] array of out-of-sample probabilities, or a list of them
            (one per model), pooled by ``pool_probs``.
    """
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise LabelError("suspect labels need the cleanlab package: "
                         "`python3 -m pip install -r requirements.txt`") from None

    labels = np.asarray(labels, dtype=np.int64)
    pooled = pool_probs(probs_list)
    scores = get_label_quality_scores(labels, pooled, method=METHOD)
    # n_jobs=1: cleanlab would otherwise fork worker processes, unsafe once TensorFlow is loaded.
    flagged = find_label_issues(labels, pooled, n_jobs=1)
    order = np.lexsort((np.arange(len(scores)), scores))  # by score, ties by position
    return np.asarray(scores, dtype=np.float64), np.asarray(flagged, bool), order.astype(np.int64)


# --- the test split: stored predictions of the runs ---------------------------------------------

def _checked_probs(path, n: int, n_classes: int) -> tuple[np.ndarray | None, str]:
    """(probabilities, "") or (None, why they cannot be used)."""
    try:
        probs = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        return None, f"test_probs.npy cannot be read ({e})"
    if probs.shape != (n, n_classes):
        return None, f"test_probs.npy has shape {probs.shape}, expected {(n, n_classes)}"
    probs = probs.astype(np.float32, copy=False)
    if not np.isfinite(probs).all() or (probs < 0).any():
        return None, "test_probs.npy holds NaN, infinite or negative values"
    if np.abs(probs.sum(axis=1) - 1.0).max() > PROB_SUM_TOLERANCE:
        return None, "test_probs.npy rows do not sum to 1 (not probabilities)"
    return probs, ""


def find_suspects(dataset: str = "mnist", split: str = "test", store: RunStore | None = None,
                  min_accuracy: float | None = None,
                  config: CrossValConfig | None = None) -> SuspectRanking:
    """Rank every label of a split, most suspect first.

    Args:
        dataset: a key of DATASETS (default "mnist").
        split: "test" (from the stored test predictions of the dataset's complete runs; fast) or
            "train" (from the stored cross-validation; never computes it).
        store: the RunStore (default: RunStore(), which includes the shipped runs: starter,
            lesson bundle, reference runs).
        min_accuracy: test split: use runs at least this accurate; default: within
            ACCURACY_MARGIN of the best complete run.
        config: train split: the CrossValConfig (default CrossValConfig(dataset)).
    Raises LabelError, with a message saying what to do, when no complete run with usable
    predictions exists (test) or the cross-validation is not complete (train).
    """
    if dataset not in DATASETS:
        raise LabelError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if split == "train":
        return _train_split(dataset, store, config)
    if split != "test":
        raise LabelError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    return _test_split(dataset, store or RunStore(), min_accuracy)


def _test_split(dataset: str, store: RunStore, min_accuracy: float | None) -> SuspectRanking:
    _, labels = load_dataset(dataset, "test")
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = len(DATASETS[dataset].class_names)
    skipped, usable = [], []
    for info in store.list_runs(dataset):
        if info.status != "complete":
            skipped.append((info.run_id, f"{info.status}: {info.reason}"))
            continue
        probs, why = _checked_probs(info.path / "test_probs.npy", len(labels), n_classes)
        if probs is None:
            skipped.append((info.run_id, f"damaged: {why}; delete the run and train it again"))
            continue
        usable.append((info.run_id, float((probs.argmax(1) == labels).mean()), probs))
    if not usable:
        raise LabelError(
            f"no complete run of {dataset} with usable test predictions in {store.root}"
            + (f" ({len(skipped)} skipped: " + "; ".join(f"{r}: {w}" for r, w in skipped) + ")"
               if skipped else "")
            + f"; train one first, e.g. `python -m digitrec train --dataset {dataset} --model "
              "fast` (about a minute on a laptop CPU), or on the Models page")
    floor = (max(a for _, a, _ in usable) - ACCURACY_MARGIN if min_accuracy is None
             else float(min_accuracy))
    used = [(r, p) for r, a, p in usable if a >= floor]
    skipped += [(r, f"accuracy {a:.4f} is below the floor {floor:.4f}")
                for r, a, _ in usable if a < floor]
    if not used:
        raise LabelError(f"no run of {dataset} reaches the accuracy floor {floor:.4f}; lower "
                         "min_accuracy or train a better model")
    probs_list = [p for _, p in used]
    scores, flagged, order = rank_labels(labels, probs_list)
    return SuspectRanking(dataset, "test", np.arange(len(labels), dtype=np.int64), labels,
                          pool_probs(probs_list).astype(np.float32), scores, flagged, order,
                          tuple(r for r, _ in used), tuple(skipped))


# --- the training split: cross-validated probabilities -------------------------------------------

def _train_split(dataset: str, store: RunStore | None,
                 config: CrossValConfig | None) -> SuspectRanking:
    config = config or CrossValConfig(dataset)
    if config.dataset != dataset:
        raise LabelError(f"the cross-validation config is for {config.dataset}, not {dataset}")
    result = load_result(config, store)
    if result is None:
        raise LabelError(
            f"the training-split suspects of {config.dataset} need a {config.folds}-fold "
            "cross-validation first (a background job, minutes on a CPU): run `python -m "
            f"digitrec suspects --dataset {config.dataset} --split train`, or call "
            "submit_cross_validation(CrossValConfig(...)) and wait for it")
    scores, flagged, order = rank_labels(result.labels, result.probs)
    return SuspectRanking(config.dataset, "train", result.indices, result.labels, result.probs,
                          scores, flagged, order, (config.key(),), ())


def excluded_indices(dataset: str, k: int, store: RunStore | None = None,
                     config: CrossValConfig | None = None) -> np.ndarray:
    """Training-split indices of the `k` most suspect training labels, sorted ascending.

    Deterministic: read from the stored cross-validation (ties broken by index). Raises
    LabelError when it is not computed yet or `k` is out of range.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise LabelError(f"the number of suspects to remove must be an integer >= 0, got {k!r}")
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    ranking = find_suspects(dataset, "train", store, config=config)
    if k >= len(ranking):
        raise LabelError(f"cannot remove {k} suspects from {len(ranking)} cross-validated "
                         "images; choose fewer")
    return np.sort(ranking.top_indices(int(k))).astype(np.int64)


def without_suspects(train_config, k: int, store: RunStore | None = None,
                     config: CrossValConfig | None = None):
    """`train_config` with its dataset's top-`k` training suspects left out: its own run.

    Sets TrainConfig's ``exclude`` field (training-split indices not trained on), so the result
    has its own run id; k = 0 gives `train_config` back. Raises LabelError when the
    cross-validation is not stored yet (the message says how to start it) or k is out of range.
    """
    drop = excluded_indices(train_config.dataset, k, store, config)
    return dataclasses.replace(train_config, exclude=tuple(int(i) for i in drop))


def corrections_csv(ranking: SuspectRanking, corrections: dict) -> str:
    """CSV text ``index,given_label,corrected_label`` for labels a person marked as wrong.

    Args:
        ranking: the ranking the marks were made on (gives the given labels).
        corrections: split index -> corrected label (e.g. the suggested one).
    """
    given = dict(zip(ranking.indices.tolist(), ranking.labels.tolist(), strict=True))
    n_classes = ranking.probs.shape[1]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", "given_label", "corrected_label"])
    for index in sorted(corrections):
        label = int(corrections[index])
        if int(index) not in given or not 0 <= label < n_classes:
            raise LabelError(f"no {ranking.split} image {index} with a label {label} in "
                             f"{ranking.dataset}")
        writer.writerow([int(index), given[int(index)], label])
    return out.getvalue()
