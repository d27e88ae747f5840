"""The classroom lesson: the notebook's story as steps, and the CPU-lesson preset of each model.

    from digitrec import lesson
    lesson.STEPS[5].title, lesson.STEPS[5].text      # "CNN", its 3-6 sentences
    config = lesson.preset("cnn")                    # the TrainConfig the lesson trains
    lesson.bundle_run(store, "cnn")                  # that run from the store or the shipped bundle

The presets follow the notebook's recipe (Adam 1e-3, batch 32, its architectures unchanged) on
fewer images and epochs, so each trains in at most 2 minutes on a 2-core laptop CPU while the
notebook's accuracy order holds (softmax < MLP ~ dropout < CNN < pooling <~ batch norm). Batch
32 matters for `cnn_bn`: its batch norm uses Keras' momentum 0.99 like the notebook, so its
running averages need several hundred steps before inference scores well (after a few dozen
steps it scores 0.18-0.29).

The bundle (`python -m digitrec lesson build`, digitrec.cli.lesson) ships these six runs in
``digitrec/lesson_bundle/runs/`` (listed by the RunStore as shipped, read-only) and a small
finished tuner search in ``digitrec/lesson_bundle/search/<key>/``; ``bundle.json`` records what
the build measured. No streamlit here: the Lesson page lays these out.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

BUNDLE_DIR = Path(__file__).parent / "lesson_bundle"
BUNDLE_INDEX = "bundle.json"
SEARCH_DIR = "search"   # inside the bundle: search/<key>/ (JSON only)
RUNS_DIR = "runs"       # inside the bundle: runs/<run_id>/ (like digitrec/starter/)

# The six notebook models in the lesson's order.
MODEL_FAMILIES = ("softmax", "mlp", "mlp_dropout", "cnn", "cnn_maxpool", "cnn_bn")

# CPU-lesson presets: TrainConfig overrides on top of each family's notebook recipe (Adam 1e-3,
# constant rate, batch 32). train_limit draws a stratified subset of the 60k training images.
PRESETS: dict[str, dict] = {
    "softmax": dict(epochs=2),                        # full training split, 2 of the 5 epochs
    "mlp": dict(epochs=3),                            # 3 of 5 epochs
    "mlp_dropout": dict(epochs=5),                    # 5 of 15: dropout slows convergence
    "cnn": dict(epochs=1, train_limit=24_000),        # 750 steps of batch 32
    # The pooled models get two passes (1,250 steps), as the notebook gives dropout 15 epochs
    # to the MLP's 5: after one pass on 24,000 images the pooled CNN scored 0.9702, below the
    # plain CNN's 0.9777 (measured 2026-12-01), which inverts the order the lesson teaches.
    "cnn_maxpool": dict(epochs=2, train_limit=20_000),
    "cnn_bn": dict(epochs=2, train_limit=20_000),     # 1,250 steps: enough for momentum 0.99
}
# --tiny: the same models on a few hundred images (tests; seconds, accuracy meaningless).
TINY_PRESETS: dict[str, dict] = {f: dict(epochs=1, train_limit=300) for f in MODEL_FAMILIES}

# The small finished tuner search the bundle ships (the notebook's space, RandomSearch).
SEARCH_PRESET = dict(family="tuned", tuner="random", max_trials=3, epochs=1, subsample=3000,
                     batch_size=32, seed=0)
TINY_SEARCH_PRESET = dict(family="tuned", tuner="random", max_trials=1, epochs=1, subsample=200,
                          batch_size=32, seed=0)


def preset(family: str, tiny: bool = False):
    """The lesson's TrainConfig for one of the notebook's six families."""
    from digitrec.training import TrainConfig
    table = TINY_PRESETS if tiny else PRESETS
    if family not in table:
        raise ValueError(f"no lesson preset for {family!r}; choose one of: "
                         f"{', '.join(MODEL_FAMILIES)}")
    return TrainConfig.for_family(family, **table[family])


def search_preset(tiny: bool = False):
    """The lesson's SearchConfig (a small RandomSearch over the notebook's space)."""
    from digitrec.tuning import SearchConfig
    return SearchConfig(**(TINY_SEARCH_PRESET if tiny else SEARCH_PRESET))


def preset_text(config) -> str:
    """One line describing a preset, e.g. "1 epoch on 24,000 images, batch 32"."""
    images = f"{config.train_limit:,}" if config.train_limit else "all 60,000"
    epochs = f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}"
    return f"{epochs} on {images} images, batch {config.batch_size}"


@dataclass(frozen=True)
class Step:
    """One screen of the lesson.

    key: short name used in code; title: the heading; text: 3-6 sentences;
    kind: "data", "normalise", "model", "search", "transfer" or "draw";
    family: the model family of a "model" step (else ""); page: the full page it links to.
    """
    key: str
    title: str
    text: str
    kind: str
    family: str = ""
    page: str = ""


STEPS: tuple[Step, ...] = (
    Step("data", "The data", "MNIST holds 70,000 handwritten digits, 60,000 to learn from and "
         "10,000 kept aside to test on. Each is a 28 x 28 grid of grey levels from 0 (white) to "
         "255 (black), written by about 500 different people. The ten classes are roughly "
         "balanced, so a model cannot score well by always guessing one digit. Everything the "
         "models below know, they learn from these pictures and their labels.",
         "data", page="Data"),
    Step("normalise", "Why normalise", "The notebook divides every pixel by 255, so inputs lie "
         "between 0 and 1. A network multiplies inputs by small random weights and adds them "
         "up: with values up to 255 those sums start huge, the softmax saturates and the "
         "gradients are either enormous or vanishingly small. Scaling changes nothing about "
         "what the picture shows, only the numbers the optimiser has to handle. It is one line "
         "of code and it often decides whether training works at all.",
         "normalise", page="Data"),
    Step("softmax", "Softmax regression", "The simplest model gives each pixel a weight for "
         "each digit and adds the votes up: 7,850 numbers in all. Softmax turns the ten totals "
         "into probabilities that add up to one. It can only learn one template per digit, so a "
         "7 written with a bar or a slanted 1 fool it. It still gets about nine digits in ten "
         "right, the baseline every later model must beat.",
         "model", family="softmax", page="Models"),
    Step("mlp", "A hidden layer (MLP)", "Between the pixels and the output we add 32 neurons, "
         "each a weighted sum of all pixels passed through relu, which keeps positive evidence "
         "and zeroes the rest. That bend makes the network non-linear: the hidden neurons learn "
         "strokes and parts, the output combines them. With 25,450 parameters it fixes many "
         "of the softmax's mistakes. Watch which digits it fixes, and which it breaks.",
         "model", family="mlp", page="Models"),
    Step("mlp_dropout", "Dropout", "Dropout switches off a random quarter of the hidden "
         "neurons at every training step, so no neuron can rely on one partner. It fights "
         "overfitting, memorising the training digits instead of learning digits in general. "
         "A 32-neuron network barely overfits MNIST, so here it changes little: the notebook "
         "saw 0.9633 against 0.9640. Regularisation pays when a model is big for its data.",
         "model", family="mlp_dropout", page="Models"),
    Step("cnn", "Convolutions (CNN)", "A convolution slides a small 5x5 window over the image "
         "and applies the same weights everywhere, so a filter that detects an edge finds it "
         "wherever it is. 64 such filters cost only 1,664 parameters. Stacking a second layer "
         "of 3x3 filters builds curves and corners out of edges. This is the first model that "
         "sees the picture as a picture, and the error rate drops sharply.",
         "model", family="cnn", page="Inside"),
    Step("cnn_maxpool", "Pooling", "Max-pooling keeps the largest value of each 2x2 patch: "
         "it halves the feature maps, keeps the evidence that a feature is there and forgets "
         "exactly where. The network becomes tolerant to small shifts of the pen. The dense "
         "layer after it shrinks from about a million parameters to a quarter of that, and "
         "accuracy still improves.",
         "model", family="cnn_maxpool", page="Inside"),
    Step("cnn_bn", "Batch normalisation", "Batch normalisation re-centres and re-scales each "
         "channel using the current batch's mean and variance, then lets the network learn "
         "its own scale and shift. Activations stay in a steady range, so training is faster "
         "and more stable. At test time it uses running averages gathered during training: "
         "with too few training steps those averages are wrong and the model fails badly, "
         "which is why the lesson trains it with small batches.",
         "model", family="cnn_bn", page="Errors"),
    Step("search", "Let the computer choose (tuner)", "Instead of choosing layer sizes by "
         "hand, a hyperparameter search trains many variants of one template and keeps the "
         "one with the best validation accuracy. The notebook's RandomSearch picks filter "
         "counts, dropout rates and the dense layer's width at random. Validation images are "
         "held out of training, so the score is honest. The lesson ships a small finished "
         "search: each row below is one trained candidate.",
         "search", page="Tuner"),
    Step("transfer", "Transfer to Fashion-MNIST", "Does the best architecture only work for "
         "digits? The notebook trains it from scratch on Fashion-MNIST: 28 x 28 grey images of "
         "shirts, shoes and bags, ten classes again. The same network reaches about 90%: "
         "clothes are harder to tell apart than digits (a shirt and a T-shirt look alike). "
         "The architecture transfers; the weights are learned anew.",
         "transfer", page="Tuner"),
    Step("draw", "Now draw your own", "Time to test the model yourself. On the Sketch page, "
         "draw a digit with the mouse or a finger and watch it go through MNIST's own "
         "preprocessing: cropped, scaled to 20 x 20, centred by its centre of mass. Try to "
         "fool it: a 7 with a bar, a very thin 1, a digit in a corner. Below, play \"guess what "
         "the model says\" on real test digits.",
         "draw", page="Sketch"),
)


def step_index(value, default: int = 1) -> int:
    """A 1-based step number from a URL value ("6", 6, "cnn"); `default` when unreadable,
    clamped to the lesson's range."""
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        keys = [s.key for s in STEPS]
        return keys.index(value) + 1 if value in keys else default
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return min(max(number, 1), len(STEPS))


def model_steps() -> list[Step]:
    """The steps that show a model, in order."""
    return [s for s in STEPS if s.kind == "model"]


def previous_family(family: str) -> str | None:
    """The model of the step before this family's ("what changed since the last step")."""
    index = MODEL_FAMILIES.index(family)
    return MODEL_FAMILIES[index - 1] if index > 0 else None


def bundle_run(store, family: str, tiny: bool = False):
    """The complete run of this family's preset (the store, else the shipped bundle), or None."""
    return store.get(preset(family, tiny))


def read_index(bundle_dir: Path | None = None) -> dict:
    """bundle.json of the bundle (what the build measured), or {} when there is none."""
    path = Path(bundle_dir or BUNDLE_DIR) / BUNDLE_INDEX
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def bundle_search(bundle_dir: Path | None = None) -> Path | None:
    """The shipped search folder (readable with digitrec.tuning's results functions), or None."""
    base = Path(bundle_dir or BUNDLE_DIR) / SEARCH_DIR
    try:
        found = sorted(p for p in base.iterdir() if (p / "search.json").is_file())
    except OSError:
        return None
    return found[0] if found else None


def install_search(store_root, bundle_dir: Path | None = None) -> str | None:
    """Copy the shipped search into ``<store_root>/tuning/<key>/`` when it is not there yet, so
    the Tuner page (which lists the store's searches) shows it; returns its key, or None when
    the bundle has no search. Never overwrites a search already in the store."""
    import shutil

    from digitrec.tuning import TUNING_DIR
    source = bundle_search(bundle_dir)
    if source is None:
        return None
    target = Path(store_root) / TUNING_DIR / source.name
    if not target.exists():
        tmp = target.with_name(f".{source.name}.copy")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        try:
            tmp.replace(target)
        except OSError:  # another session installed it first
            shutil.rmtree(tmp, ignore_errors=True)
    return source.name


def game_digits(labels, probs, count: int = 30, seed: int = 0):
    """Test indices for "guess what the model says": mostly hard ones.

    Half are digits the model gets wrong, a quarter ones it is unsure of (top probability under
    0.9) and the rest random, shuffled; where a group is short, random ones fill in.
    Args:
        labels: int [N] true labels; probs: float [N, C] the model's probabilities.
    Returns int64 indices, `count` of them at most (all distinct).
    """
    import numpy as np
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float32)
    rng = np.random.default_rng(seed)
    wrong = np.flatnonzero(probs.argmax(1) != labels)
    unsure = np.flatnonzero((probs.max(1) < 0.9) & (probs.argmax(1) == labels))
    picked = list(rng.permutation(wrong)[:count // 2]) + list(rng.permutation(unsure)[:count // 4])
    rest = np.setdiff1d(np.arange(len(labels)), picked)
    picked += list(rng.permutation(rest)[:max(count - len(picked), 0)])
    return rng.permutation(np.asarray(picked, dtype=np.int64))


def score_guess(score: tuple[int, int], guess: int, model_answer: int) -> tuple[int, int]:
    """(right, played) after one guess of the model's answer (not of the true label)."""
    right, played = score
    return right + int(int(guess) == int(model_answer)), played + 1
