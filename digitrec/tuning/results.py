"""Reading searches back: results tables, learning curves, the best configuration, status.

    frame = results_frame(config)           # one row per trial: hyperparameters, score, time, ...
    curves = learning_curves(config)        # per-epoch loss/accuracy of every trial
    best_train_config(config)               # "train best fully": a TrainConfig for the RunStore

Everything here reads JSON files (keras-tuner's oracle.json and trial.json, our search.json,
summary.json, job.json) with the standard library: no keras-tuner, no TensorFlow, no pickle.
Readers are tolerant and never move or rewrite anything: an unreadable file is reported (a
DAMAGED row, `frame.attrs["problems"]`), and only the process running a search repairs it
(`digitrec.tuning.jobs.repair_project`). Re-exported by `digitrec.tuning`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitrec import models
from digitrec.files import read_json
from digitrec.tuning.config import (
    CURVE_KEYS,
    OBJECTIVE,
    PROJECT,
    TUNING_DIR,
    SearchConfig,
    TuningError,
    clean_values,
    family_of,
    read_config,
    search_folder,
    store_root,
)
from digitrec.worker import read_job_file, worker_alive

# --- keras-tuner's files -----------------------------------------------------------------------

ORACLE_KEYS = ("ongoing_trials", "hyperparameters", "start_order", "end_order", "run_times",
               "retry_queue", "seed", "seed_state", "tried_so_far", "id_to_hash", "display")
TRIAL_KEYS = ("trial_id", "hyperparameters", "metrics", "score", "best_step", "status", "message")


@dataclass
class ProjectState:
    """What a keras-tuner project folder holds, read without keras-tuner.

    Attributes:
        path: the project folder; oracle: oracle.json's dict (None if missing or damaged);
        trials: trial id -> trial.json state, for every readable trial; damaged: (file, why) for
        every unreadable oracle.json / trial.json; workers: trial id -> worker.json dict.
    """
    path: Path
    oracle: dict | None = None
    trials: dict = field(default_factory=dict)
    damaged: list = field(default_factory=list)
    workers: dict = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.oracle is not None or bool(self.trials) or bool(self.damaged)


def _check_keys(data, keys, what: str) -> str:
    if not isinstance(data, dict):
        return f"{what} is not a JSON object"
    missing = [k for k in keys if k not in data]
    return f"{what} lacks {', '.join(missing)}" if missing else ""


def read_project(path: Path) -> ProjectState:
    """Read a keras-tuner project folder: oracle.json and every trial_*/trial.json. Never raises;
    truncated or invalid files are listed in `damaged` and skipped."""
    state = ProjectState(Path(path))
    oracle_file = state.path / "oracle.json"
    if oracle_file.exists():
        try:
            oracle = read_json(oracle_file)
            problem = _check_keys(oracle, ORACLE_KEYS, "oracle.json")
        except (OSError, ValueError) as e:
            oracle, problem = None, f"oracle.json is unreadable ({_short(e)})"
        if problem:
            state.damaged.append((oracle_file, problem))
        else:
            state.oracle = oracle
    for trial_file in sorted(state.path.glob("trial_*/trial.json")):
        try:
            trial = read_json(trial_file)
            problem = _check_keys(trial, TRIAL_KEYS, f"{trial_file.parent.name}/trial.json")
            if not problem and not isinstance(trial["hyperparameters"].get("values"), dict):
                problem = f"{trial_file.parent.name}/trial.json has no hyperparameter values"
        except (OSError, ValueError, AttributeError) as e:
            problem = f"{trial_file.parent.name}/trial.json is unreadable ({_short(e)})"
        if problem:
            state.damaged.append((trial_file, problem))
            continue
        state.trials[str(trial["trial_id"])] = trial
        try:
            state.workers[str(trial["trial_id"])] = read_json(trial_file.parent / "worker.json")
        except (OSError, ValueError):
            pass
    if state.oracle is not None:  # trials the oracle counts on must be readable
        for trial_id in state.oracle.get("start_order") or []:
            if str(trial_id) not in state.trials and not any(
                    f.parent.name == f"trial_{trial_id}" for f, _ in state.damaged):
                state.damaged.append((state.path / f"trial_{trial_id}" / "trial.json",
                                      f"trial_{trial_id}/trial.json is missing"))
    elif state.trials and not state.damaged:
        state.damaged.append((oracle_file, "oracle.json is missing"))
    return state


def _short(err: Exception) -> str:
    text = str(err)
    return text if len(text) < 120 else text[:117] + "..."


def _observations(trial: dict, metric: str) -> list[tuple[int, float]]:
    """(step, mean value) pairs of one metric of a trial state, by step."""
    try:
        history = trial["metrics"]["metrics"][metric]["observations"]
    except (KeyError, TypeError):
        return []
    out = []
    for obs in history:
        try:
            values = obs["value"] if isinstance(obs["value"], list) else [obs["value"]]
            out.append((int(obs["step"]), float(np.mean([float(v) for v in values]))))
        except (KeyError, TypeError, ValueError):
            continue
    return sorted(out)


def _number(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


def _trial_row(trial: dict, worker: dict | None, alive: bool, family: str | None) -> dict:
    values = trial["hyperparameters"]["values"]
    status = str(trial.get("status") or "UNKNOWN")
    if status in ("RUNNING", "IDLE") and not alive:
        status = "INTERRUPTED"  # the search process is gone; resuming retries it
    curve = _observations(trial, "loss")
    seconds = [v for _, v in _observations(trial, "seconds")]
    row = dict(trial_id=str(trial["trial_id"]), status=status, score=_number(trial.get("score")),
               best_epoch=(int(trial["best_step"]) + 1 if isinstance(trial.get("best_step"), int)
                           and trial.get("score") is not None else None),
               epochs=len(curve), seconds=max(seconds) if seconds else math.nan,
               worker=(worker or {}).get("tuner_id"))
    row.update(clean_values(values, family))
    if "tuner/epochs" in values:  # Hyperband's schedule
        row.update(bracket=values.get("tuner/bracket"), round=values.get("tuner/round"),
                   epochs_total=values.get("tuner/epochs"),
                   continues=values.get("tuner/trial_id"))
    return row


def _space_names(state: ProjectState) -> list[str]:
    """Hyperparameter names in declaration order (oracle space first, then any in trials)."""
    names = []
    sources = [state.oracle.get("hyperparameters")] if state.oracle else []
    sources += [t["hyperparameters"] for t in state.trials.values()]
    for source in sources:
        for entry in (source or {}).get("space", []):
            name = (entry.get("config") or {}).get("name") if isinstance(entry, dict) else None
            if name and not name.startswith("tuner/") and name not in names:
                names.append(name)
    return names


def results_frame(project, root=None):
    """One row per trial of a search, read from its trial.json files (JSON, no pickle).

    Args:
        project: a SearchConfig, a search folder (str/Path) or anything with `.path`.
        root: the run store root when `project` is a SearchConfig (default as RunStore).
    Returns a pandas DataFrame sorted by trial_id with columns trial_id, status (COMPLETED,
    RUNNING, FAILED, INVALID, INTERRUPTED, DAMAGED), score (best val_accuracy), best_epoch,
    epochs (trained in this trial), seconds, worker (tuner id that ran it, when known), one
    column per hyperparameter, and for Hyperband bracket, round, epochs_total, continues.
    ``frame.attrs`` holds "hyperparameters" (the column names of the space), "objective" and
    "problems" (messages about unreadable files; their trials are DAMAGED rows).
    """
    import pandas as pd

    folder = search_folder(project, root)
    state = read_project(folder / PROJECT)
    alive = worker_alive(folder)
    family = family_of(folder)
    rows = [_trial_row(t, state.workers.get(i), alive, family) for i, t in state.trials.items()]
    for path, _why in state.damaged:
        if path.name == "trial.json":
            rows.append(dict(trial_id=path.parent.name.removeprefix("trial_"), status="DAMAGED"))
    names = _space_names(state)
    base = ["trial_id", "status", "score", "best_epoch", "epochs", "seconds", "worker"]
    frame = pd.DataFrame(rows, columns=None if rows else base)
    for col in base + names:
        if col not in frame:
            frame[col] = None
    extra = [c for c in frame.columns if c not in base + names]
    frame = frame[base + names + extra].sort_values("trial_id", kind="stable").reset_index(drop=True)
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    frame["seconds"] = pd.to_numeric(frame["seconds"], errors="coerce")
    frame.attrs.update(hyperparameters=names, objective=OBJECTIVE,
                       problems=[why for _, why in state.damaged])
    return frame


def learning_curves(project, trial_id: str | None = None, root=None):
    """Per-epoch curves of the trials (keras-tuner keeps them in trial.json: we report every
    epoch's metrics to the oracle).

    Args:
        project: a SearchConfig, a search folder or anything with `.path`.
        trial_id: only this trial (default: every trial).
    Returns a pandas DataFrame with columns trial_id, epoch (1-based, global: a Hyperband
    trial that continues another starts after its epochs), loss, accuracy, val_loss,
    val_accuracy; one row per trial and epoch.
    """
    import pandas as pd
    state = read_project(search_folder(project, root) / PROJECT)
    rows = []
    for tid, trial in sorted(state.trials.items()):
        if trial_id is not None and tid != str(trial_id):
            continue
        epochs: dict[int, dict] = {}
        for metric in CURVE_KEYS:
            for step, value in _observations(trial, metric):
                epochs.setdefault(step, {})[metric] = value
        rows += [dict(trial_id=tid, epoch=step + 1, **vals) for step, vals in sorted(epochs.items())]
    return pd.DataFrame(rows, columns=["trial_id", "epoch", *CURVE_KEYS])


def best_trial(project, root=None) -> tuple[str, float, dict]:
    """(trial_id, score, hyperparameters) of the best completed trial; TuningError if none."""
    folder = search_folder(project, root)
    state = read_project(folder / PROJECT)
    scored = [(float(t["score"]), tid) for tid, t in state.trials.items()
              if t.get("status") == "COMPLETED" and math.isfinite(_number(t.get("score")))]
    if not scored:
        raise TuningError(f"the search in {folder} has no completed trial yet; run or resume it "
                          "first")
    score, tid = min(scored, key=lambda p: (-p[0], p[1]))  # the highest; on ties the first
    values = state.trials[tid]["hyperparameters"]["values"]
    return tid, score, clean_values(values, family_of(folder))


def best_hyperparameters(project, root=None) -> dict:
    """The best completed trial's hyperparameters, as `models.build_model(family, **hp)` takes
    them (only the family's names; keras-tuner's `tuner/*` bookkeeping dropped)."""
    config = read_config(project, root)
    allowed = models.FAMILIES[config.family].defaults
    return {k: v for k, v in best_trial(project, root)[2].items() if k in allowed}


def best_train_config(project, epochs: int | None = None, root=None, **overrides):
    """"Train best fully": a TrainConfig of the best configuration with its family's recipe,
    on the whole training split (a normal run: submit it to the RunStore; it is cached).

    Args:
        project: a SearchConfig, a search folder or anything with `.path`.
        epochs: override the recipe's epochs (None keeps it: 10 for tuned, 2 for fast).
        **overrides: any other TrainConfig field (batch_size, seed, ...).
    """
    from digitrec.training import TrainConfig
    config = read_config(project, root)
    overrides.setdefault("seed", config.seed)
    if epochs is not None:
        overrides["epochs"] = epochs
    return TrainConfig.for_family(config.family, dataset=config.dataset,
                                  hparams=best_hyperparameters(project, root), **overrides)


def transfer_config(project, dataset: str = "fashion-mnist", root=None, **overrides):
    """The best architecture trained from scratch on Fashion-MNIST as the notebook does:
    batch 128, 8 epochs, Adam.

    Like the notebook it validates on the test split (`validate_on_test=True`), so its curves
    are comparable with the notebook's; the test accuracy is scored at the end as for any run.
    """
    from digitrec.training import TrainConfig
    config = read_config(project, root)
    recipe = dict(batch_size=128, epochs=8, optimizer="adam", learning_rate=1e-3,
                  lr_schedule="constant", augment=False, validation_split=0.0,
                  validate_on_test=True, seed=config.seed)
    recipe.update(overrides)
    return TrainConfig.for_family(config.family, dataset=dataset,
                                  hparams=best_hyperparameters(project, root), **recipe)


# --- results and status -----------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SearchResult:
    """What `run_search` returns.

    Attributes:
        config: the SearchConfig; path: the search folder; status: "complete" (or "worker"
        for a distributed worker, whose chief holds the results); trials: `results_frame`;
        best_trial_id, best_score, best_hyperparameters: the best completed trial (None/{} if
        none); trained: trials this call trained (0 when the search was already finished);
        seconds: wall time of this call; messages: notes (a repaired project, ...).
    """
    config: SearchConfig
    path: Path
    status: str
    trials: Any
    best_trial_id: str | None = None
    best_score: float | None = None
    best_hyperparameters: dict = field(default_factory=dict)
    trained: int = 0
    seconds: float = 0.0
    messages: tuple = ()

    def summary(self) -> dict:
        """A JSON-ready summary (the CLI's --json output)."""
        counts = self.trials["status"].value_counts().to_dict() if len(self.trials) else {}
        return dict(key=self.config.key(), path=str(self.path), status=self.status,
                    config=self.config.to_dict(), trials=len(self.trials),
                    trial_status={str(k): int(v) for k, v in counts.items()},
                    configurations=distinct_configurations(self.trials),
                    best_trial_id=self.best_trial_id, best_score=self.best_score,
                    best_hyperparameters=self.best_hyperparameters, trained=self.trained,
                    seconds=round(self.seconds, 3), messages=list(self.messages))


def distinct_configurations(frame) -> int:
    """How many different hyperparameter settings a results frame holds (a Hyperband trial
    that continues another one's training is the same configuration)."""
    names = frame.attrs.get("hyperparameters") or []
    if not len(frame) or not names:
        return 0
    done = frame[frame["status"] != "DAMAGED"]
    return int(len(done[names].astype(str).drop_duplicates()))


def load_result(project, root=None, trained: int = 0, seconds: float = 0.0,
                messages: tuple = (), status: str = "complete") -> SearchResult:
    """A SearchResult read back from disk (no training, no keras-tuner)."""
    config = read_config(project, root)
    folder = search_folder(project, root)
    frame = results_frame(folder)
    try:
        tid, score, _ = best_trial(folder)
        best = best_hyperparameters(folder)
    except TuningError:
        tid, score, best = None, None, {}
    return SearchResult(config, folder, status, frame, tid, score, best, trained, seconds,
                        tuple(messages))


def search_status(project, root=None) -> tuple[str, str]:
    """(status, reason) of a search folder: "complete", "running", "cancelled", "failed",
    "interrupted" (its process died; running it again resumes) or "new" (never started)."""
    folder = search_folder(project, root)
    try:
        summary = read_json(folder / "summary.json")
        if isinstance(summary, dict) and summary.get("status") == "complete":
            return "complete", ""
    except (OSError, ValueError):
        pass
    if worker_alive(folder):
        return "running", ""
    job = read_job_file(folder)
    status = job.get("status")
    if status == "cancelled":
        return "cancelled", "cancelled on request; run it again to resume"
    if status == "failed":
        return "failed", str(job.get("error") or "the search failed")
    if status in ("running", "queued") or (folder / PROJECT / "oracle.json").exists():
        return "interrupted", ("the search process stopped before finishing; run it again to "
                               "resume (finished trials are kept)")
    return "new", ""


@dataclass(frozen=True)
class SearchInfo:
    """One entry of `list_searches`: key, path, config (None if unreadable), status, reason,
    trials (rows so far), best_score (None if none), updated (unix seconds)."""
    key: str
    path: Path
    config: SearchConfig | None
    status: str
    reason: str = ""
    trials: int = 0
    best_score: float | None = None
    updated: float = 0.0


def list_searches(root=None) -> list[SearchInfo]:
    """Every search in the store, newest first. Never raises for odd contents."""
    base = store_root(root) / TUNING_DIR
    out = []
    for folder in sorted(base.iterdir()) if base.is_dir() else []:
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            config = read_config(folder)
        except TuningError as e:
            out.append(SearchInfo(folder.name, folder, None, "damaged", str(e)))
            continue
        status, reason = search_status(folder)
        state = read_project(folder / PROJECT)
        scores = [_number(t.get("score")) for t in state.trials.values()
                  if t.get("status") == "COMPLETED"]
        scores = [s for s in scores if math.isfinite(s)]
        try:
            updated = max(p.stat().st_mtime for p in folder.iterdir())
        except (OSError, ValueError):
            updated = 0.0
        out.append(SearchInfo(folder.name, folder, config, status, reason, len(state.trials),
                              max(scores) if scores else None, updated))
    out.sort(key=lambda i: i.updated, reverse=True)
    return out
