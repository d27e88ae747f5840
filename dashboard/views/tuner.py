"""Tuner page: search hyperparameters with keras-tuner, study the trials, train the best fully.

A search never runs in this script: "Start" hands its SearchConfig to `digitrec.tuning
.submit_search`, which starts a worker process, and a fragment polls its progress. The search
on screen is named in the URL (`?search=<key>`), so a reload or a second tab shows the same
search; with no link, a running search is shown first. "Train best fully" and "Transfer to
Fashion-MNIST" are normal runs of the run store (cached like any other), shown with the Models
page's pieces (`dashboard.training_ui`).
"""
import time

import streamlit as st

import digitrec
from dashboard import training_ui as tui
from dashboard import tuner_ui as tnu
from dashboard import ui
from digitrec import tuning
from digitrec.training import TrainConfig
from digitrec.tuning import SEARCH_SPACES, TUNERS, TuningError
from digitrec.tuning_jobs import SearchJob

SEARCH = "tuner_search"  # session key of the search picker (a search key)
NOTICE = tnu.NOTICE  # (kind, message) shown once, after a button
# form field -> widget key
KEYS = {name: f"tuner_{name}" for name in tnu.DEFAULTS}
TRANSFER_TO = "fashion-mnist"


def _notice() -> None:
    kind, text = st.session_state.pop(NOTICE, (None, None))
    if text:
        getattr(st, kind)(text)


def _submit(config) -> None:
    """Start (or resume, or attach to) a search and show it."""
    try:
        job = tuning.submit_search(config)
    except ValueError as e:
        st.session_state[NOTICE] = ("error", str(e))
        return
    st.session_state[SEARCH] = job.key  # set before the picker is drawn in this run
    st.session_state[NOTICE] = {
        "cached": ("success", "This search is already finished: showing its stored results."),
        "attached": ("info", "This search is already running (another tab, user or the CLI): "
                             "showing its progress."),
    }.get(job.origin, ("success", f"Search {job.key} started in a background process. You can "
                                  "leave this page, reload it or open it in another tab."))


# --------------------------------------------------------------------------- 1 · start

def start_form(dataset: str, expanded: bool) -> None:
    for name, value in tnu.DEFAULTS.items():
        st.session_state.setdefault(KEYS[name], value)
    with st.expander("Start or resume a search", expanded=expanded, icon=":material/tune:"):
        c = st.columns(4)
        tuner = c[0].selectbox("Tuner", TUNERS, key=KEYS["tuner"],
                               help="\n\n".join(f"**{k}**: {v}" for k, v in tnu.TUNER_HELP.items()))
        family = c[1].selectbox("Search space", list(SEARCH_SPACES), key=KEYS["family"],
                                format_func=lambda f: f"{f}: {tnu.FAMILY_HELP.get(f, '')}")
        lo, hi = tnu.BOUNDS["max_trials"]
        max_trials = c[2].number_input("Budget (max trials)", lo, hi, step=1,
                                       key=KEYS["max_trials"])
        lo, hi = tnu.BOUNDS["epochs"]
        epochs = c[3].number_input("Epochs per trial", lo, hi, step=1, key=KEYS["epochs"],
                                   help="Hyperband: the most epochs any one trial trains.")
        c = st.columns(4)
        lo, hi = tnu.BOUNDS["subsample"]
        subsample = c[0].number_input(
            "Subsample (fraction of training images)", lo, hi, step=0.01, format="%g",
            key=KEYS["subsample"], help="A stratified share of the training split; 0.05 is "
            "3,000 MNIST images. Validation comes out of it; the test split is never used.")
        lo, hi = tnu.BOUNDS["validation"]
        validation = c[1].number_input("Validation (fraction of the subsample)", lo, hi,
                                       step=0.05, format="%g", key=KEYS["validation"])
        lo, hi = tnu.BOUNDS["batch_size"]
        batch = c[2].number_input("Batch size", lo, hi, step=1, key=KEYS["batch_size"])
        lo, hi = tnu.BOUNDS["seed"]
        seed = c[3].number_input("Seed", lo, hi, step=1, key=KEYS["seed"])
        form = dict(tuner=tuner, family=family, max_trials=max_trials, epochs=epochs,
                    subsample=subsample, validation=validation, batch_size=batch, seed=seed)
        try:
            config = tnu.to_search_config(form, dataset)
        except TuningError as e:
            st.error(str(e))
            return
        left, right = st.columns([1, 4], vertical_alignment="center")
        if left.button("Start / resume", type="primary", key="tuner_start",
                       icon=":material/play_arrow:"):
            _submit(config)
        right.caption(f"On **{digitrec.dataset_info(dataset).title}** (the sidebar's dataset), "
                      f"in a background process on {tui.device()}. The same settings resume an "
                      f"interrupted search. From a terminal: `{tnu.CLI_EXAMPLE}`.")


def empty_state() -> None:
    st.info(
        "**No search yet.** A hyperparameter search trains many small models, each with "
        "different settings (how many convolution blocks, how many filters, how much dropout…), "
        "scores each on held-out images and keeps the best configuration. This is what the "
        "notebook's last part does with keras-tuner.\n\n"
        "To keep it short on a CPU, each trial trains on a small stratified subsample for a few "
        "epochs; then **Train best fully** trains the winner on all images. Open **Start or "
        "resume a search** above (the defaults take a few minutes), or run from a terminal:\n\n"
        f"```\n{tnu.CLI_EXAMPLE}\n```", icon=":material/school:")


# --------------------------------------------------------------------------- 2 · pick

def pick_search(infos: list):
    """The search picker; returns the chosen SearchInfo. The URL names the choice."""
    for info in infos:
        if info.config is None:
            st.warning(f"Search folder `{info.path}` is damaged and cannot be shown: {info.reason}")
    usable = {i.key: i for i in infos if i.config is not None}
    if not usable:
        return None
    if st.session_state.get(SEARCH) not in usable:
        wanted = st.query_params.get("search")
        if wanted and wanted not in usable:
            st.warning(f"The link names search `{wanted}`, which is not in this run store; "
                       "showing another one.")
        running = [k for k, i in usable.items() if i.status == "running"]
        st.session_state[SEARCH] = wanted if wanted in usable else (running or list(usable))[0]
    key = st.selectbox("Search", list(usable), key=SEARCH,
                       format_func=lambda k: tnu.search_label(usable[k]))
    if st.query_params.get("search") != key:
        st.query_params["search"] = key  # a reload or a shared link opens this search
    return usable[key]


@st.fragment(run_every=2)
def live_search(info, shown_done: int) -> None:
    """Progress of a running search, redrawn every 2 s from its job.json. A finished trial
    (or the end of the search) redraws the whole page, so the table and plots follow."""
    job = SearchJob(info.config, info.path)
    p = job.progress()
    if p["status"] != "running" or (p.get("done") or 0) != shown_done:
        st.rerun()
    st.progress(tnu.fraction_done(p), text=tnu.search_progress_text(p))
    c = st.columns(4)
    c[0].metric("Trials finished", f"{p.get('done') or 0} of {p.get('trials') or '?'}")
    best = p.get("best_score")
    c[1].metric("Best score so far", "…" if best is None else f"{best:.4f}")
    started = p.get("started") or time.time()
    c[2].metric("Elapsed", tui.duration(time.time() - started))
    c[3].metric("Remaining (estimate)", tui.duration(p.get("eta")))
    if p.get("hyperparameters") and p.get("trial"):
        st.caption(f"Trial {p['trial']} tries: " + ", ".join(
            f"{k}={v}" for k, v in p["hyperparameters"].items()))
    if p.get("cancel_requested"):
        st.button("Cancelling…", disabled=True, key="tuner_cancel")
    elif st.button("Cancel the search", key="tuner_cancel", icon=":material/stop_circle:"):
        job.cancel()
        st.caption("Cancelling after the current batch; finished trials are kept.")


def status_section(info) -> dict:
    """Status, messages and (running) live progress of the chosen search; returns progress."""
    job = SearchJob(info.config, info.path)
    p = job.progress()
    for text in p.get("messages") or []:
        st.warning(text)  # a damaged project moved aside, trials carried over, ...
    st.caption(f"Search `{info.key}` · {tnu.describe(info.config)} · folder `{info.path}`")
    if p["status"] == "running":
        live_search(info, p.get("done") or 0)
    elif p["status"] == "complete":
        st.success(f"Complete: {p.get('done')} trials, best score "
                   f"{p['best_score']:.4f}." if p.get("best_score") is not None else "Complete.",
                   icon=":material/check_circle:")
    else:
        reason = p.get("reason") or p.get("error") or ""
        (st.error if p["status"] == "failed" else st.warning)(
            f"This search is **{p['status']}**" + (f": {reason}" if reason else "."))
        # A callback: it runs before the next script run, so it may set the picker's key.
        st.button("Resume the search", key="tuner_resume", icon=":material/replay:",
                  on_click=_submit, args=(info.config,))
    return p


# --------------------------------------------------------------------------- 3 · trials

def trials_section(info, status: str):
    folder = str(info.path)
    stamp = tnu.stamp(folder)
    frame, names, problems = tnu.trials(folder, stamp, status)
    for text in problems:
        st.warning(f"Part of this search cannot be read: {text}. Its trial is listed as "
                   "DAMAGED; resuming the search moves the damaged files aside and keeps every "
                   "finished trial that can still be read.")
    st.subheader("Trials")
    if frame.empty:
        st.caption("No trial has started yet.")
        return frame, names
    st.dataframe(frame, key="tuner_trials", hide_index=True, column_config={
        "score": st.column_config.NumberColumn("score", format="%.4f",
                                               help="best val_accuracy of the trial"),
        "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
        "best_epoch": "best epoch"})
    st.download_button("Download the trials (CSV)", data=tnu.trials_csv(frame),
                       file_name=f"digitrec-search-{info.key}.csv", mime="text/csv",
                       key="tuner_csv", icon=":material/download:", on_click="ignore")
    st.caption("Click a column header to sort. The score is the best validation accuracy a "
               "trial reached on held-out images of the subsample.")

    st.subheader("Hyperparameters against score")
    fig = tnu.parcoords_figure(frame, names)
    if fig is None:
        st.caption("No trial has a score yet.")
    else:
        st.plotly_chart(fig, key="tuner_parcoords")
        st.caption("One line per trial, coloured by its score. Drag along an axis to keep only "
                   "the trials in a range.")

    st.subheader("Learning curves of a trial")
    lines = tnu.curves(folder, stamp)
    ids = list(dict.fromkeys(lines["trial_id"]))
    if not ids:
        st.caption("No trial has finished an epoch yet.")
    else:
        best_id = frame.loc[frame["score"].idxmax(), "trial_id"] if frame["score"].notna().any() \
            else ids[0]
        trial_id = st.selectbox("Trial", ids, index=ids.index(best_id) if best_id in ids else 0,
                                key="tuner_curve_trial",
                                format_func=lambda t: _trial_label(frame, t))
        history = tnu.history_of(lines, trial_id)
        epochs = max((len(v) for v in history.values()), default=1)
        st.plotly_chart(tui.curves_figure(history, max(epochs, info.config.epochs)),
                        key="tuner_curves")
    return frame, names


def _trial_label(frame, trial_id: str) -> str:
    row = frame[frame["trial_id"] == trial_id]
    if row.empty or row["score"].isna().all():
        return f"trial {trial_id}"
    return f"trial {trial_id} · score {row['score'].iloc[0]:.4f}"


# --------------------------------------------------------------------------- 4 · the best

def best_section(info) -> None:
    st.subheader("The best configuration")
    try:
        trial_id, score, _ = tuning.best_trial(info.path)
        best = tuning.best_hyperparameters(info.path)
    except TuningError as e:
        st.caption(str(e))
        return
    st.markdown(f"Trial **{trial_id}** scored **{score:.4f}** with " +
                ", ".join(f"`{k}={v}`" for k, v in best.items()) + ".")
    family = info.config.family
    summary = tui.model_summary(family, tuple(sorted(best.items())),
                                len(ui.class_names(info.config.dataset)))
    st.dataframe(summary["rows"], key="tuner_layers", hide_index=True,
                 column_config={"layer": "Layer", "type": "Type", "output_shape": "Output shape",
                                "params": st.column_config.NumberColumn("Param #",
                                                                        format="localized")})
    st.markdown(f"**Total parameters: {summary['total']:,}**")

    st.subheader("Train the best fully")
    recipe = TrainConfig.for_family(family)
    lo, hi = tui.BOUNDS["epochs"]
    epochs = st.columns(4)[0].number_input("Epochs", lo, hi, value=recipe.epochs, step=1,
                             key=f"tuner_full_epochs_{family}",
                             help=f"The `{family}` family's recipe trains {recipe.epochs} epochs.")
    st.caption("All training images of the search's dataset, with the family's training recipe; "
               "scored on the test split, which the search never saw.")
    tnu.run_panel(tuning.best_train_config(info.path, epochs=int(epochs)), "tuner_full",
              "Train best fully")

    st.subheader("Transfer to Fashion-MNIST")
    if info.config.dataset == TRANSFER_TO:
        st.caption("This search already ran on Fashion-MNIST.")
    elif not digitrec.available(TRANSFER_TO):
        how = digitrec.dataset_info(TRANSFER_TO).how_to_get
        st.caption(f"Fashion-MNIST is not available here: its files were not found. To get them: "
                   f"{how}.")
    else:
        st.caption("As the notebook ends: the best architecture trained from scratch on clothing "
                   "images (batch 128, 8 epochs, Adam), its curves validated on the test split.")
        tnu.run_panel(tuning.transfer_config(info.path, dataset=TRANSFER_TO), "tuner_transfer",
                  "Transfer to Fashion-MNIST")


# --------------------------------------------------------------------------- the page

def render() -> None:
    dataset = ui.current_dataset()
    st.title("Tuner · hyperparameter search")
    _notice()
    start_form(dataset, expanded=not tuning.list_searches())
    _notice()  # a Start pressed just now
    infos = tuning.list_searches()  # a search started just now is listed too
    if not infos:
        empty_state()
        return
    st.subheader("Search")
    info = pick_search(infos)
    if info is None:
        empty_state()
        return
    progress = status_section(info)
    trials_section(info, progress["status"])
    best_section(info)


render()
