"""Tuner page: search hyperparameters with keras-tuner, study the trials, train the best fully.

A search never runs in this script: "Start" hands its SearchConfig to `digitrec.tuning
.submit_search`, which starts a worker process, and a fragment polls its progress. The search
on screen is named in the URL (`?search=<key>`), so a reload or a second tab shows the same
search; with no link, a running search is shown first. "Train best fully" and "Transfer to
Fashion-MNIST" are normal runs of the run store (cached like any other), shown with the shared
widgets of `dashboard.components`. The page's pieces are in `dashboard/helpers/tuner.py`.
"""
import time

import streamlit as st
from streamlit.errors import StreamlitAPIException

import digitrec
from dashboard import components
from dashboard.helpers import model as model_helpers
from dashboard.helpers import shared
from dashboard.helpers import tuner as tuner_helpers
from digitrec import tuning
from digitrec.runs import RunError
from digitrec.training import TrainConfig
from digitrec.tuning import SEARCH_SPACES, TUNERS, SearchJob, TuningError
from digitrec.worker import format_duration

SEARCH = "tuner_search"  # session key of the search picker (a search key)
NOTICE = "tuner_notice"  # (kind, message) shown once, after a button
# form field -> widget key
KEYS = {name: f"tuner_{name}" for name in tuner_helpers.DEFAULTS}
TRANSFER_TO = "fashion-mnist"


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
    """The search settings, one form: nothing reruns while they are edited, "Start / resume"
    sends them all at once."""
    for name, value in tuner_helpers.DEFAULTS.items():
        st.session_state.setdefault(KEYS[name], value)
    bounds = tuner_helpers.BOUNDS
    with st.expander("Start or resume a search", expanded=expanded, icon=":material/tune:"), \
            st.form("tuner_start_form", border=False):
        c = st.columns(4)
        tuner = c[0].selectbox("Tuner", TUNERS, key=KEYS["tuner"], help="\n\n".join(
            f"**{k}**: {v}" for k, v in tuner_helpers.TUNER_HELP.items()))
        family = c[1].selectbox("Search space", list(SEARCH_SPACES), key=KEYS["family"],
                                format_func=lambda f: f"{f}: {tuner_helpers.FAMILY_HELP.get(f, '')}")
        max_trials = c[2].number_input("Budget (max trials)", *bounds["max_trials"], step=1,
                                       key=KEYS["max_trials"])
        epochs = c[3].number_input("Epochs per trial", *bounds["epochs"], step=1, key=KEYS["epochs"],
                                   help="Hyperband: the most epochs any one trial trains.")
        c = st.columns(4)
        subsample = c[0].number_input(
            "Subsample (fraction of training images)", *bounds["subsample"], step=0.01,
            format="%g", key=KEYS["subsample"], help="A stratified share of the training split; "
            "0.05 is 3,000 MNIST images. Validation comes out of it; the test split is never used.")
        validation = c[1].number_input("Validation (fraction of the subsample)",
                                       *bounds["validation"], step=0.05, format="%g",
                                       key=KEYS["validation"])
        batch = c[2].number_input("Batch size", *bounds["batch_size"], step=1, key=KEYS["batch_size"])
        seed = c[3].number_input("Seed", *bounds["seed"], step=1, key=KEYS["seed"])
        left, right = st.columns([1, 4], vertical_alignment="center")
        started = left.form_submit_button("Start / resume", type="primary", key="tuner_start",
                                          icon=":material/play_arrow:")
        right.caption(f"On **{digitrec.dataset_info(dataset).title}** (the sidebar's dataset), "
                      f"in a background process on {model_helpers.device()}. The same settings "
                      f"resume an interrupted search. From a terminal: `{tuner_helpers.CLI_EXAMPLE}`.")
    if started:
        form = dict(tuner=tuner, family=family, max_trials=max_trials, epochs=epochs,
                    subsample=subsample, validation=validation, batch_size=batch, seed=seed)
        try:
            config = tuner_helpers.to_search_config(form, dataset)
        except TuningError as e:
            st.session_state[NOTICE] = ("error", str(e))
            return
        _submit(config)


def empty_state() -> None:
    st.info(
        "**No search yet.** A hyperparameter search trains many small models, each with "
        "different settings (how many convolution blocks, how many filters, how much dropout…), "
        "scores each on held-out images and keeps the best configuration. This is what the "
        "notebook's last part does with keras-tuner.\n\n"
        "To keep it short on a CPU, each trial trains on a small stratified subsample for a few "
        "epochs; then **Train best fully** trains the winner on all images. Open **Start or "
        "resume a search** above (the defaults take a few minutes), or run from a terminal:\n\n"
        f"```\n{tuner_helpers.CLI_EXAMPLE}\n```", icon=":material/school:")


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
                       format_func=lambda k: tuner_helpers.search_label(usable[k]))
    if st.query_params.get("search") != key:
        st.query_params["search"] = key  # a reload or a shared link opens this search
    return usable[key]


def live_search(info, shown_done: int) -> None:
    """Progress of a running search, redrawn every 2 s from its job.json. A finished trial
    (or the end of the search) redraws the whole page, so the table and plots follow."""
    def draw(p: dict) -> None:
        st.progress(tuner_helpers.fraction_done(p), text=tuner_helpers.search_progress_text(p))
        c = st.columns(4)
        c[0].metric("Trials finished", f"{p.get('done') or 0} of {p.get('trials') or '?'}")
        best = p.get("best_score")
        c[1].metric("Best score so far", "…" if best is None else f"{best:.4f}")
        started = p.get("started") or time.time()
        c[2].metric("Elapsed", format_duration(time.time() - started))
        c[3].metric("Remaining (estimate)", format_duration(p.get("eta")))
        if p.get("hyperparameters") and p.get("trial"):
            st.caption(f"Trial {p['trial']} tries: " + ", ".join(
                f"{k}={v}" for k, v in p["hyperparameters"].items()))

    components.job_progress(
        SearchJob(info.config, info.path), "tuner", draw, every=2,
        stale=lambda p: p["status"] != "running" or (p.get("done") or 0) != shown_done,
        cancel="Cancel the search",
        cancelling="Cancelling after the current batch; finished trials are kept.")


def status_section(info) -> dict:
    """Status, messages and (running) live progress of the chosen search; returns progress."""
    job = SearchJob(info.config, info.path)
    p = job.progress()
    for text in p.get("messages") or []:
        st.warning(text)  # a damaged project moved aside, trials carried over, ...
    st.caption(f"Search `{info.key}` · {tuner_helpers.describe(info.config)} · folder `{info.path}`")
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
    stamp = tuner_helpers.stamp(folder)
    frame, names, problems = tuner_helpers.trials(folder, stamp, status)
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
    st.download_button("Download the trials (CSV)", data=tuner_helpers.trials_csv(frame),
                       file_name=f"digitrec-search-{info.key}.csv", mime="text/csv",
                       key="tuner_csv", icon=":material/download:", on_click="ignore")
    st.caption("Click a column header to sort. The score is the best validation accuracy a "
               "trial reached on held-out images of the subsample.")

    st.subheader("Hyperparameters against score")
    fig = tuner_helpers.parcoords_figure(frame, names)
    if fig is None:
        st.caption("No trial has a score yet.")
    else:
        st.plotly_chart(fig, key="tuner_parcoords")
        st.caption("One line per trial, coloured by its score. Drag along an axis to keep only "
                   "the trials in a range.")

    st.subheader("Learning curves of a trial")
    lines = tuner_helpers.curves(folder, stamp)
    ids = list(dict.fromkeys(lines["trial_id"]))
    if not ids:
        st.caption("No trial has finished an epoch yet.")
    else:
        best_id = frame.loc[frame["score"].idxmax(), "trial_id"] if frame["score"].notna().any() \
            else ids[0]
        trial_id = st.selectbox("Trial", ids, index=ids.index(best_id) if best_id in ids else 0,
                                key="tuner_curve_trial",
                                format_func=lambda t: _trial_label(frame, t))
        history = tuner_helpers.history_of(lines, trial_id)
        epochs = max((len(v) for v in history.values()), default=1)
        st.plotly_chart(components.curves_figure(history, max(epochs, info.config.epochs)),
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
    summary = model_helpers.model_summary(family, tuple(sorted(best.items())),
                                          len(shared.class_names(info.config.dataset)))
    components.layer_table(summary, key="tuner_layers")

    st.subheader("Train the best fully")
    recipe = TrainConfig.for_family(family)
    lo, hi = model_helpers.BOUNDS["epochs"]
    epochs = st.columns(4)[0].number_input("Epochs", lo, hi, value=recipe.epochs, step=1,
                             key=f"tuner_full_epochs_{family}",
                             help=f"The `{family}` family's recipe trains {recipe.epochs} epochs.")
    st.caption("All training images of the search's dataset, with the family's training recipe; "
               "scored on the test split, which the search never saw.")
    run_panel(tuning.best_train_config(info.path, epochs=int(epochs)), "tuner_full",
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
        run_panel(tuning.transfer_config(info.path, dataset=TRANSFER_TO), "tuner_transfer",
                  "Transfer to Fashion-MNIST")


# --------------------------------------------------------------------------- runs of the best

def run_panel(config: TrainConfig, prefix: str, label: str) -> None:
    """A run of the run store: its result when stored, its live progress while training,
    else a button that submits it (a cached run comes back at once)."""
    store = shared.run_store()
    try:
        info = store.info(config.key())
    except RunError:
        info = None
    if info is not None and info.status == "complete":
        show_run(store, info.run_id, prefix)
        return
    if info is not None and info.status == "running":
        components.training_progress(info.run_id, prefix)
        return
    if info is not None:
        st.warning(f"The last training of this configuration is **{info.status}**: {info.reason}")
    if st.button(label if info is None else f"{label} again", key=f"{prefix}_train",
                 type="primary", icon=":material/play_arrow:"):
        try:
            job = store.submit(config)
        except ValueError as e:
            st.error(str(e))
            return
        st.session_state[NOTICE] = ("success", f"Training started in a background process "
                                               f"(run {job.run_id}).")
        st.rerun()


def show_run(store, run_id: str, prefix: str) -> None:
    """A finished run: its test figures, named by dataset (the transfer's are on Fashion-MNIST,
    not on the search's dataset), its learning curves and the way to the Models page.

    Args:
        store: the RunStore; run_id: the complete run; prefix: keys this panel's elements.
    """
    try:
        run = store.load(run_id)
    except RunError as e:
        st.error(str(e))
        return
    m = run.metrics
    components.run_metrics(m, f"Test accuracy on {tuner_helpers.short_name(run.config.dataset)}")
    st.plotly_chart(components.curves_figure(run.history, run.config.epochs),
                    key=f"{prefix}_curves")
    pages = "the Errors and Sketch pages" if run.config.dataset == "mnist" else "the Errors page"
    st.caption(f"Run `{run_id}` on {m.get('device', 'an unknown device')}; "
               f"{tuner_helpers.validation_text(run.config)}. A normal run: listed on the Models "
               f"page and usable on {pages}.")
    models_link(run.config.dataset)


def models_link(dataset: str) -> None:
    """A link to the Models page, whose leaderboard lists the runs of the sidebar's dataset.

    Args:
        dataset: the run's dataset; when the sidebar shows another one, the hint says to switch.
    """
    name = tuner_helpers.short_name(dataset)
    hint = ("" if shared.current_dataset() == dataset else
            f" (choose {digitrec.dataset_info(dataset).title} in the sidebar there)")
    try:
        st.page_link("views/model.py", label=f"See it on the Models page leaderboard of "
                     f"{name}{hint}", icon=":material/leaderboard:")
    except StreamlitAPIException:
        # The page run alone (not through dashboard/app.py) has no Models page to link to.
        st.caption(f"Open the **Models** page from the menu to see it on the leaderboard of "
                   f"{name}{hint}.")


# --------------------------------------------------------------------------- the page

def render() -> None:
    dataset = shared.current_dataset()
    st.title("Tuner · hyperparameter search")
    components.notice(NOTICE)
    start_form(dataset, expanded=not tuning.list_searches())
    components.notice(NOTICE)  # a Start pressed just now
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
