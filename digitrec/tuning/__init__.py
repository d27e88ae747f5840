"""Hyperparameter search with keras-tuner: the notebook's search space, built through the model zoo.

    config = SearchConfig(tuner="hyperband", family="fast", max_trials=20, epochs=3, subsample=0.1)
    result = run_search(config)                 # resumable; a finished search returns at once
    result.trials                               # DataFrame: one row per trial (results_frame)
    job = submit_search(config)                 # the same search in a background worker
    store.submit(best_train_config(result.path))   # "train best fully": a normal cached run

A search lives in the run store, ``<store>/tuning/<key>/`` with ``key = config.key()``:

    search.json      the SearchConfig
    job.json         live progress (trial k of N, best score, elapsed, eta; see jobs)
    summary.json     written last, when the search is complete
    recovery.json    notes on damaged projects that were moved aside
    project/         keras-tuner's own project: oracle.json, trial_<id>/trial.json (per-epoch
                     metrics, score, status), per-trial weights (.weights.h5, Hyperband only)

Everything is JSON or HDF5 weights: no pickle anywhere. The package, one concept per module, each
building only on the ones above it:

    config     SearchConfig, the search spaces, the search data, where searches live
    results    reading a search back: results_frame, learning_curves, best_train_config, status
    engine     keras-tuner: the HyperModel, tuners with digitrec's hooks (imports TensorFlow)
    jobs       running a search: foreground, background worker, repair, SearchJob

This file is the package's public face. It imports no TensorFlow: `engine` loads only when a
search runs, so `digitrec.tuning.engine.SearchHyperModel` is imported from there. The ``tune``
command is `digitrec.cli.tune`.
"""
from digitrec.tuning.config import (
    CURVE_KEYS,
    MIN_SUBSAMPLE,
    OBJECTIVE,
    PROJECT,
    SEARCH_SPACES,
    SPACE_VERSION,
    TUNERS,
    TUNING_DIR,
    SearchCancelled,
    SearchConfig,
    SearchListener,
    TuningError,
    clean_values,
    declare_space,
    family_of,
    read_config,
    search_data,
    search_dir,
    search_folder,
    store_root,
)
from digitrec.tuning.jobs import SearchJob, SearchProgress, repair_project, run_search, submit_search
from digitrec.tuning.results import (
    ProjectState,
    SearchInfo,
    SearchResult,
    best_hyperparameters,
    best_train_config,
    best_trial,
    distinct_configurations,
    learning_curves,
    list_searches,
    load_result,
    read_project,
    results_frame,
    search_status,
    transfer_config,
)

__all__ = [
    "CURVE_KEYS", "MIN_SUBSAMPLE", "OBJECTIVE", "PROJECT", "SEARCH_SPACES", "SPACE_VERSION",
    "TUNERS", "TUNING_DIR", "SearchCancelled", "SearchConfig", "SearchListener", "TuningError",
    "clean_values", "declare_space", "family_of", "read_config", "search_data", "search_dir",
    "search_folder", "store_root",
    "SearchJob", "SearchProgress", "repair_project", "run_search", "submit_search",
    "ProjectState", "SearchInfo", "SearchResult", "best_hyperparameters", "best_train_config",
    "best_trial", "distinct_configurations", "learning_curves", "list_searches", "load_result",
    "read_project", "results_frame", "search_status", "transfer_config",
]
