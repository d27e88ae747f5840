"""Models page: pick a model family, read what it teaches, see its layers, train it and compare runs.

Training never runs in this script: "Train" hands the configuration to the run store
(`RunStore.submit`), which starts a worker process, and a fragment polls the job's progress
every second. The settings live in the URL's query parameters, so a reload, a second tab or a
shared link rebuilds the same configuration, and with it finds the same job or stored run.
Sections with modules of their own: the augmentation preview (views/model_augment.py), training
without the suspect labels (views/model_suspects.py), the TFLite / ONNX / SavedModel exports
(views/model_export.py).
"""
import re

import streamlit as st

import digitrec
from dashboard import components
from dashboard.helpers import model as model_helpers
from dashboard.helpers import shared
from dashboard.views import model_augment, model_export, model_suspects
from digitrec import models
from digitrec.runs import RunError
from digitrec.training import LR_SCHEDULES, OPTIMIZERS, ConfigError, TrainConfig
from digitrec.transfer import import_archive

FORM = "model_form"  # session key of the form dict: outlives the widgets when the page is left
NOTICE = "model_notice"  # (kind, message) to show once, set by callbacks
# form field -> widget key
KEYS = dict(family="model_family", epochs="model_epochs", batch_size="model_batch",
            optimizer="model_optimizer", learning_rate="model_lr", lr_schedule="model_schedule",
            validation_split="model_val", augment="model_augment", seed="model_seed",
            quick="model_quick", limit="model_limit")
RECIPE_FIELDS = ("epochs", "batch_size", "optimizer", "learning_rate", "lr_schedule",
                 "validation_split", "augment")
IMPORTED = "model_imported"  # (upload file_id, message kind, message) of the last import


def hp_key(family: str, name: str) -> str:
    return f"model_hp_{family}_{name}"


# --------------------------------------------------------------------------- form state

def _apply(form: dict) -> None:
    """Make `form` the page's settings, widgets included (callbacks and first runs only)."""
    st.session_state[FORM] = form
    for field, key in KEYS.items():
        st.session_state[key] = form[field]
    for name, value in form["hparams"].items():
        st.session_state[hp_key(form["family"], name)] = value


def _open(config_dict: dict, notice: str | None = None) -> None:
    """Callback: load a stored run's settings into the form."""
    config = TrainConfig.from_dict(config_dict)
    form, warnings = model_helpers.form_of(config)
    _apply(form)
    if config.exclude:  # the form has no field for it: say what the settings leave out
        warnings.append(f"Run {config.key()} left out {len(config.exclude):,} suspect training "
                        "images; these settings train on every image (see *Without the suspect "
                        "labels* below).")
    messages = [m for m in [notice, *warnings] if m]
    if messages:
        st.session_state[NOTICE] = ("warning" if warnings else "info", " ".join(messages))


def _retry(config_dict: dict) -> None:
    """Callback: submit an unfinished run again and show it."""
    try:
        job = shared.run_store().submit(TrainConfig.from_dict(config_dict))
    except ValueError as e:
        st.session_state[NOTICE] = ("error", str(e))
        return
    _open(config_dict, f"Retrying run {job.run_id}: training started again.")


def _family_changed() -> None:
    """Callback: a new family brings its own training recipe (epochs, batch, optimizer, ...)."""
    recipe = model_helpers.default_form(st.session_state[KEYS["family"]])
    for field in RECIPE_FIELDS:
        st.session_state[KEYS[field]] = recipe[field]


def _init_form() -> None:
    """First visit in this session: settings from the URL (warning about what is unusable)."""
    if FORM not in st.session_state:
        form, warnings = model_helpers.from_query(st.query_params)
        _apply(form)
        if warnings:
            st.session_state[NOTICE] = ("warning", "\n\n".join(warnings))
    form = st.session_state[FORM]
    for field, key in KEYS.items():  # widgets forgotten while another page was shown
        if key not in st.session_state:
            st.session_state[key] = form[field]


# --------------------------------------------------------------------------- the settings

def choose_family() -> str:
    left, right = st.columns([1, 2])
    family = left.selectbox("Model family", list(models.FAMILIES), key=KEYS["family"],
                            format_func=lambda f: models.FAMILIES[f].title,
                            on_change=_family_changed)
    fam = models.FAMILIES[family]
    right.info(fam.explanation, icon=":material/school:")
    if fam.notebook_accuracy is not None:
        left.caption(f"In the notebook: {fam.notebook_params:,} parameters, "
                     f"{fam.notebook_epochs} epochs, test accuracy {fam.notebook_accuracy:.4f}.")
    return family


def hyperparameters(family: str) -> dict:
    fam, form = models.FAMILIES[family], st.session_state[FORM]
    if not fam.defaults:
        st.caption("This family has no hyperparameters of its own: its shape is fixed by the "
                   "images (784 pixels) and the classes (10).")
        return {}
    values = {}
    cols = st.columns(5)  # fixed widths: one hyperparameter is not a page-wide box
    for i, (name, default) in enumerate(fam.defaults.items()):
        key = hp_key(family, name)
        if key not in st.session_state:
            st.session_state[key] = form["hparams"].get(name, default) \
                if form["family"] == family else default
        col, label, low_high = cols[i % len(cols)], name.replace("_", " "), fam.ranges.get(name)
        if isinstance(default, bool):
            values[name] = col.checkbox(label, key=key)
        elif isinstance(default, int):
            lo, hi = low_high or (1, None)
            values[name] = col.number_input(label, lo, hi, step=1, key=key)
        elif low_high:
            values[name] = col.slider(label, float(low_high[0]), float(low_high[1]), step=0.01,
                                      key=key)
        else:
            values[name] = col.number_input(label, step=0.01, key=key)
    return values


def layer_table(family: str, hparams: dict, dataset: str) -> None:
    summary = model_helpers.model_summary(family, tuple(sorted(hparams.items())),
                                          len(shared.class_names(dataset)))
    components.layer_table(summary, key="model_layers")
    if summary.dense:
        st.markdown("A dense layer connects every input to every unit, and each unit adds a bias:")
        st.markdown("\n".join(f"- `{name}`: {formula}" for name, formula in summary.dense))


def training_settings() -> dict:
    c = st.columns(5)
    lo, hi = model_helpers.BOUNDS["epochs"]
    epochs = c[0].number_input("Epochs", lo, hi, step=1, key=KEYS["epochs"])
    lo, hi = model_helpers.BOUNDS["batch_size"]
    batch = c[1].number_input("Batch size", lo, hi, step=1, key=KEYS["batch_size"])
    optimizer = c[2].selectbox("Optimizer", OPTIMIZERS, key=KEYS["optimizer"])
    lo, hi = model_helpers.BOUNDS["learning_rate"]
    lr = c[3].number_input("Learning rate (peak)", lo, hi, step=1e-4, format="%g",
                           key=KEYS["learning_rate"])
    schedule = c[4].selectbox("Schedule", LR_SCHEDULES, key=KEYS["lr_schedule"],
                              help="constant; one_cycle: warm up, then anneal to 0; cosine: "
                                   "half a cosine down to 0")
    c = st.columns(5, vertical_alignment="bottom")
    lo, hi = model_helpers.BOUNDS["validation_split"]
    val = c[0].slider("Validation split", lo, hi, step=0.05, key=KEYS["validation_split"],
                      help="Hold out this fraction of the training images to draw validation "
                           "curves (0: none, as in the notebook's first models).")
    lo, hi = model_helpers.BOUNDS["seed"]
    seed = c[1].number_input("Seed", lo, hi, step=1, key=KEYS["seed"])
    augment = c[2].checkbox("Augment (shift, rotate, zoom)", key=KEYS["augment"])
    quick = c[3].toggle("Quick lesson", key=KEYS["quick"],
                        help="Train on a stratified subset of the training images: minutes "
                             "become seconds, accuracy drops a little.")
    lo, hi = model_helpers.BOUNDS["limit"]
    limit = c[4].number_input("Training images", lo, hi, step=500, key=KEYS["limit"],
                              disabled=not quick)
    return dict(epochs=epochs, batch_size=batch, optimizer=optimizer, learning_rate=lr,
                lr_schedule=schedule, validation_split=val, seed=seed, augment=augment,
                quick=quick, limit=limit)


# --------------------------------------------------------------------------- this configuration

def show_complete(store, run_id: str) -> None:
    try:
        run = store.load(run_id)
    except RunError as e:  # damaged since it was listed: say so, the rest of the page still works
        st.error(str(e))
        return
    m, fam = run.metrics, models.FAMILIES.get(run.config.family)
    components.run_metrics(m)
    note = f"Trained on {m.get('device', 'an unknown device')}."
    if fam and fam.notebook_accuracy is not None:
        note += (f" The notebook reports {fam.notebook_accuracy:.4f} for this family with its "
                 f"recipe ({fam.notebook_epochs} epochs, batch 32, all 60,000 images).")
    st.caption(note)
    st.plotly_chart(components.curves_figure(run.history, run.config.epochs), key="model_curves")
    st.download_button("Download this run (.zip)",
                       data=lambda: model_helpers.run_zip(run.run_id), key="model_download_this",
                       file_name=f"digitrec-{run.config.family}-{run_id}.zip",
                       mime="application/zip", icon=":material/download:", on_click="ignore")
    if run.shipped:
        st.caption("This run ships with digitrec (read-only).")


def this_configuration(store, config) -> None:
    try:
        info = store.info(config.key())
    except RunError:
        st.caption("Not trained yet. Press **Train**: it runs in a background process, so you "
                   "can keep using the dashboard, reload the page or open it in another tab.")
        return
    if info.status == "complete":
        show_complete(store, info.run_id)
    elif info.status == "running":
        # Progress of the job, redrawn every second from its job.json, with per-batch values.
        components.training_progress(info.run_id, "model", trace=True)
    else:
        st.warning(f"The last training of this configuration is **{info.status}**: "
                   f"{info.reason}. Press **Train** to try again.")


@st.fragment(run_every=2)
def other_jobs(dataset: str, current: str, shown: tuple) -> None:
    """Jobs training other configurations of this dataset (another tab, user or the CLI)."""
    if st.session_state.pop("model_rerun", False):
        st.rerun()  # a "Show" click: the whole form must redraw
    running = [i for i in shared.run_store().list_runs(dataset)
               if i.status == "running" and i.run_id != current]
    if tuple(i.run_id for i in running) != shown:
        st.rerun()  # one finished or started: refresh the tables too
    for info in running:
        p = info.progress or {}
        left, right = st.columns([5, 1], vertical_alignment="center")
        left.progress(min(max(float(p.get("fraction") or 0.0), 0.0), 1.0),
                      text=f"{info.config.family} · run {info.run_id} · {components.progress_text(p)}")
        right.button("Show", key=f"model_show_{info.run_id}", on_click=_show,
                     args=(info.config.to_dict(),))


def _show(config_dict: dict) -> None:
    _open(config_dict)
    st.session_state["model_rerun"] = True


# --------------------------------------------------------------------------- all runs

def runs_section(store, dataset: str, infos: list, current: str) -> None:
    """The runs table (with Retry), the leaderboard and the download; `current` is the run id
    of the configuration on screen, offered first for download."""
    st.subheader(f"Runs on {digitrec.dataset_info(dataset).title}")
    if not infos:
        st.caption("No runs yet: train one above, or copy run folders (from the CLI on another "
                   f"machine) into {store.root}.")
        return
    st.dataframe(model_helpers.runs_table(infos), key="model_runs", hide_index=True,
                 column_config={"test accuracy": st.column_config.NumberColumn(format="%.4f"),
                                "train time (s)": st.column_config.NumberColumn(format="%.1f"),
                                "parameters": st.column_config.NumberColumn(format="localized")})
    for info in infos:
        if info.status in ("interrupted", "failed", "cancelled") and info.config is not None:
            left, right = st.columns([5, 1], vertical_alignment="center")
            left.markdown(f"**{info.config.family}** · run `{info.run_id}` is "
                          f"**{info.status}**: {info.reason}")
            right.button("Retry", key=f"model_retry_{info.run_id}", on_click=_retry,
                         args=(info.config.to_dict(),), icon=":material/replay:")

    board = model_helpers.leaderboard(infos)
    st.subheader("Leaderboard")
    if board.empty:
        st.caption("No complete runs yet.")
        return
    st.dataframe(board, key="model_leaderboard", hide_index=True,
                 column_config={"test accuracy": st.column_config.NumberColumn(format="%.4f"),
                                "train time (s)": st.column_config.NumberColumn(format="%.1f"),
                                "parameters": st.column_config.NumberColumn(format="localized")})
    st.plotly_chart(model_helpers.params_scatter(board), key="model_scatter")
    st.caption("More parameters are not always better: pooling, batch normalisation and a good "
               "training recipe matter as much as size (the x axis is logarithmic).")

    st.subheader("Download a run")
    complete = {i.run_id: i for i in infos if i.status == "complete"}
    left, mid, right = st.columns([3, 1, 1], vertical_alignment="bottom")
    ids = list(complete)
    run_id = left.selectbox("Run", ids, index=ids.index(current) if current in ids else 0,
                            # a new (or newly trained) configuration: its run comes first
                            key=f"model_download_run_{current if current in ids else ''}",
                            format_func=lambda r: f"{complete[r].config.family} · "
                            f"{complete[r].metrics.get('test_accuracy', 0):.4f} · {r}")
    picked = complete[run_id]
    mid.download_button("Download .zip", data=lambda: model_helpers.run_zip(picked.run_id),
                        file_name=f"digitrec-{picked.config.family}-{run_id}.zip",
                        mime="application/zip", icon=":material/download:", on_click="ignore")
    right.button("Open its settings", key="model_open_run", on_click=_open,
                 args=(picked.config.to_dict(),))
    st.caption("The zip holds model.keras (load it with `keras.saving.load_model(path, "
               "safe_mode=True)`), config.json, metrics.json, history.json and the test-set "
               "predictions; `python -m digitrec import` or the box below adds it to another store.")
    model_export.export_section(picked)


# --------------------------------------------------------------------------- import

def _plain(text: str) -> str:
    """Backslash-escape Markdown punctuation: messages may quote names from inside an uploaded
    archive, which must show as text, never as links, formatting or HTML."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:])", r"\\\1", text)


def _import(store, upload, dataset: str) -> tuple[str, str]:
    """Import an uploaded run archive; (message kind, message). Nothing is written unless
    digitrec.transfer accepted every file in it."""
    try:
        done = import_archive(store, upload)
    except ValueError as e:  # TransferError (refused) or RunError (store not writable, busy)
        return "error", f"Not imported: {e}"
    run = done.run
    what = (f"run {run.run_id} ({run.config.family} on {run.config.dataset}, test accuracy "
            f"{run.metrics['test_accuracy']:.4f})")
    if not done.created:
        return "info", f"The store already holds {what}; it was kept unchanged."
    where = ("It is listed above." if run.config.dataset == dataset else
             f"Switch the sidebar to {run.config.dataset} to see it in the runs table.")
    return "success", f"Imported {what}. {where}"


def import_section(store, dataset: str) -> None:
    """Upload a run trained elsewhere (`python -m digitrec export`, or a download above)."""
    st.subheader("Import a run")
    upload = st.file_uploader("Import a run (.zip)", type=["zip"], key="model_import",
                              help="A run exported on another machine with `python -m digitrec "
                                   "export RUN_ID`. It is checked before anything is saved.")
    if upload is None:
        return
    last = st.session_state.get(IMPORTED)
    if last is None or last[0] != upload.file_id:  # each upload is imported once, not per rerun
        kind, text = _import(store, upload, dataset)
        st.session_state[IMPORTED] = (upload.file_id, kind, text)
        if kind == "success":
            st.rerun()  # the runs table above must list the new run
    _, kind, text = st.session_state[IMPORTED]
    getattr(st, kind)(_plain(text))


# --------------------------------------------------------------------------- the page

def render() -> None:
    dataset = shared.current_dataset()
    store = shared.run_store()
    st.title(f"Models · {digitrec.dataset_info(dataset).title}")
    _init_form()
    components.notice(NOTICE)

    st.subheader("1 · Choose a model")
    family = choose_family()
    st.subheader("2 · Its layers")
    hparams = hyperparameters(family)
    layer_table(family, hparams, dataset)

    st.subheader("3 · Train it")
    form = dict(family=family, hparams=hparams, **training_settings())
    model_augment.augment_preview(dataset, form["augment"])
    st.session_state[FORM] = form
    try:
        config = model_helpers.to_config(form, dataset)
    except ConfigError as e:
        st.error(str(e))
        config = None
    if config is not None:
        query = model_helpers.to_query(config)
        if dict(st.query_params) != query:  # the link in the address bar opens this setup
            st.query_params.from_dict(query)
    c = st.columns([1, 5], vertical_alignment="center")
    clicked = c[0].button("Train", type="primary", icon=":material/play_arrow:",
                          key="model_train", disabled=config is None)
    c[1].caption(f"Training device: **{model_helpers.device()}**, in a background process. The address bar "
                 "holds these settings: copy it to share this setup.")
    if clicked:
        submit(store, config)

    if config is not None:
        st.subheader("This configuration")
        this_configuration(store, config)
        model_suspects.without_suspects_section(store, config)

    infos = [i for i in store.list_runs()
             if i.config is None or i.config.dataset == dataset]
    running = tuple(i.run_id for i in infos if i.status == "running"
                    and (config is None or i.run_id != config.key()))
    if running:
        st.subheader("Other jobs in progress")
        other_jobs(dataset, config.key() if config else "", running)
    runs_section(store, dataset, infos, config.key() if config else "")
    import_section(store, dataset)


def submit(store, config) -> None:
    """The Train button: a stored run shows at once; otherwise a background job starts."""
    if store.get(config) is not None:
        st.success("Already trained: loaded from the run store.", icon=":material/inventory_2:")
        return
    try:
        job = store.submit(config)
    except ValueError as e:
        st.error(str(e))
        return
    if job.origin == "cached":
        st.success("Already trained: loaded from the run store.", icon=":material/inventory_2:")
    elif job.origin == "attached":
        st.info("This configuration is already being trained (from another tab, user or the "
                "CLI): showing its progress.")
    else:
        st.success(f"Training started in a background process (run {job.run_id}).")


render()
