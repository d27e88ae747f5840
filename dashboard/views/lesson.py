"""Lesson page: the notebook's story as a guided classroom lesson, one step per screen.

The step is in the URL (``?step=6``), so a teacher can share "step 6". Each model step shows its
model at once from the shipped lesson bundle (or the run store), or trains its CPU-lesson preset
in the background with one click; "what changed" compares it digit by digit with the step
before. The last step holds the "guess what the model says" game. Texts and presets are
`digitrec.lesson`; figures reuse the other pages' helpers.
"""
from __future__ import annotations

import numpy as np
import streamlit as st
from streamlit.errors import StreamlitAPIException

from dashboard import components
from dashboard.helpers import data as data_helpers
from dashboard.helpers import errors as errors_helpers
from dashboard.helpers import lesson as lesson_helpers
from dashboard.helpers import model as model_helpers
from dashboard.helpers import shared
from dashboard.helpers import sketch as sketch_helpers
from dashboard.helpers import tuner as tuner_helpers
from digitrec import datasets, lesson, models, tuning
from digitrec.runs import RunError

STEP = lesson_helpers.STEP
PAGES = {"Models": "views/model.py", "Errors": "views/errors.py", "Tuner": "views/tuner.py",
         "Inside": "views/inside.py", "Sketch": "views/sketch.py", "Data": "views/data.py"}
# The run picker key of each page that has one: a run chosen here is selected there.
PICKER_KEYS = {"Errors": "err_run", "Inside": "inside_run", "Sketch": "sketch_model"}


def current_step() -> int:
    """The 1-based step from the URL (default 1), written back when it was missing or odd."""
    number = lesson.step_index(st.query_params.get(STEP))
    if st.query_params.get(STEP) != str(number):
        st.query_params[STEP] = str(number)
    return number


def go(number: int) -> None:
    st.query_params[STEP] = str(min(max(number, 1), len(lesson.STEPS)))


def header(number: int) -> None:
    presenter = st.toggle("Presenter view", key="lesson_presenter",
                          help="Larger text for a projector. Collapse the sidebar with « too.")
    if presenter:
        st.markdown(lesson_helpers.PRESENTER_CSS, unsafe_allow_html=True)
        st.caption("Presenter view: collapse the sidebar (« at its top) for the whole screen.")
    step = lesson.STEPS[number - 1]
    st.progress(number / len(lesson.STEPS), text=f"Step {number} of {len(lesson.STEPS)}")
    st.title(step.title)
    st.markdown(step.text)


def nav(number: int, where: str) -> None:
    """Previous / next buttons (they change the URL's step); the top pair also answers the
    left and right arrow keys, for a presenter with a clicker or a keyboard."""
    keys = ("left", "right") if where == "top" else (None, None)
    c = st.columns([1, 1, 4])
    c[0].button("Previous", key=f"lesson_prev_{where}", disabled=number <= 1,
                icon=":material/arrow_back:", on_click=go, args=(number - 1,), shortcut=keys[0])
    c[1].button("Next", key=f"lesson_next_{where}", disabled=number >= len(lesson.STEPS),
                icon=":material/arrow_forward:", on_click=go, args=(number + 1,),
                type="primary", shortcut=keys[1])


def open_page(page: str, label: str, info=None, query: dict | None = None, key: str = "") -> None:
    """A link to another page; with `info`, that run is selected there (Models: by URL; pages
    with a run picker: by its session key, then switch)."""
    path = PAGES[page]
    if info is not None and page in PICKER_KEYS:
        if st.button(label, key=f"lesson_open_{key}", icon=":material/open_in_new:"):
            st.session_state[PICKER_KEYS[page]] = info.run_id
            try:
                st.switch_page(path)
            except StreamlitAPIException:
                st.caption(f"Open the **{page}** page from the menu; run `{info.run_id}` is "
                           "selected there.")
        return
    try:
        st.page_link(path, label=label, icon=":material/open_in_new:", query_params=query)
    except StreamlitAPIException:  # the page run alone (tests), or a page not there yet
        st.caption(f"Open the **{page}** page from the menu.")


# --------------------------------------------------------------------------- steps

def data_step() -> None:
    st.plotly_chart(data_helpers.class_histogram("mnist", "train"), key="lesson_histogram")
    images, labels = shared.load_split("mnist", "train")
    idx = data_helpers.sample_indices("mnist", "train", None, 16, 0)
    st.plotly_chart(components.digit_grid(images[idx], [str(labels[i]) for i in idx],
                                          columns=8), key="lesson_samples")
    open_page("Data", "Explore the data on the Data page")


def normalise_step() -> None:
    images, labels = shared.load_split("mnist", "train")
    image = images[0]
    c = st.columns(2)
    c[0].plotly_chart(data_helpers.pixel_heatmap(image, "%{z}", f"raw 0–255 (a {labels[0]})"),
                      key="lesson_raw")
    c[1].plotly_chart(data_helpers.pixel_heatmap(data_helpers.scaled(image).round(1), "%{z}",
                                                 "scaled 0–1 (÷ 255)"), key="lesson_scaled")
    open_page("Data", "See the heatmaps on the Data page")


def model_step(step) -> None:
    family = step.family
    config = lesson.preset(family)
    fam = models.FAMILIES[family]
    info = lesson_helpers.step_info(family)
    st.caption(f"Lesson preset: {lesson.preset_text(config)}. The notebook trained "
               f"{fam.notebook_epochs} epochs on all 60,000 images and reached "
               f"{fam.notebook_accuracy:.4f}.")
    if not lesson_helpers.complete(info):
        train_panel(family, config, info)
        return
    components.run_metrics(info.metrics)
    what_changed(family, info)
    c = st.columns(2)
    with c[0]:
        open_page("Models", "Open it on the Models page", query=model_helpers.to_query(config))
    with c[1]:
        target = step.page if step.page in PICKER_KEYS else "Errors"
        open_page(target, f"Open it on the {target} page", info=info, key=family)


def train_panel(family: str, config, info,
                how_long: str = "on a 2-core laptop it takes at most about 2 minutes") -> None:
    """Not trained here yet: one click trains the preset in the background."""
    if info is not None and info.status == "running":
        components.training_progress(info.run_id, f"lesson_{family}")
        return
    if info is not None and info.status != "complete":
        st.caption(f"The last training of this preset is {info.status}: {info.reason}")
    st.info(f"This step's model is not in the run store yet. Train it now (in the background; "
            f"{how_long}).", icon=":material/school:")
    if st.button("Train this step's model", key=f"lesson_train_{family}", type="primary",
                 icon=":material/model_training:"):
        try:
            shared.run_store().submit(config)
        except RunError as e:
            st.error(str(e))
            return
        st.rerun()


def what_changed(family: str, info) -> None:
    """The accuracy delta and the digits fixed and broken since the previous model step; the
    first model step shows its mistakes instead."""
    _, labels = shared.load_split("mnist", "test")
    images, _ = shared.load_split("mnist", "test")
    probs = errors_helpers.test_probabilities(shared.ref_of(info))
    before_family = lesson.previous_family(family)
    before = lesson_helpers.step_info(before_family) if before_family else None
    st.subheader("What changed since the last step")
    if not lesson_helpers.complete(before):
        wrong = np.flatnonzero(probs.argmax(1) != labels)
        st.markdown(f"It gets **{len(wrong):,}** of the 10,000 test digits wrong. A few of them:")
        shown = wrong[:16]
        if len(shown):
            st.plotly_chart(components.digit_grid(images[shown], lesson_helpers.digit_titles(
                shown, probs, labels)), key="lesson_mistakes")
        return
    comp = lesson_helpers.change(before, info)
    c = st.columns(3)
    c[0].metric("Accuracy", f"{lesson_helpers.accuracy(info):.4f}",
                delta=f"{comp.accuracy_b - comp.accuracy_a:+.4f} vs {before_family}")
    c[1].metric("Digits fixed", f"{comp.n_fixed:,}")
    c[2].metric("Digits broken", f"{comp.n_broken:,}")
    st.caption(comp.verdict)
    for title, chosen, key in (("Fixed (the previous model got them wrong)", comp.fixed, "fixed"),
                               ("Broken (the previous model got them right)", comp.broken,
                                "broken")):
        shown = np.asarray(chosen)[:8]
        if len(shown):
            st.markdown(f"**{title}**")
            st.plotly_chart(components.digit_grid(images[shown], lesson_helpers.digit_titles(
                shown, probs, labels)), key=f"lesson_{key}")


def search_step() -> None:
    folder = lesson.bundle_search()
    if folder is None:
        st.info("No search is shipped with this copy. Run one on the Tuner page, or "
                f"`{tuner_helpers.CLI_EXAMPLE}`.", icon=":material/tune:")
        open_page("Tuner", "Open the Tuner page")
        return
    config = tuning.read_config(folder)
    st.caption(tuner_helpers.describe(config))
    frame, names, _ = tuner_helpers.trials(str(folder), tuner_helpers.stamp(folder), "complete")
    if len(frame):
        best = frame["score"].max()
        st.metric("Best validation accuracy", f"{best:.4f}")
        st.plotly_chart(tuner_helpers.parcoords_figure(frame, names), key="lesson_parcoords")
        st.dataframe(frame[["trial_id", "score", *names]], hide_index=True)
    try:
        key = lesson.install_search(shared.run_store().root)
    except OSError:
        key = None
    open_page("Tuner", "Open this search on the Tuner page",
              query={"search": key} if key else None)


def transfer_step() -> None:
    folder = lesson.bundle_search()
    if not datasets.available("fashion-mnist"):
        st.info("Fashion-MNIST's files are not on this computer, so this step shows what would "
                "happen: the best architecture of the search above is trained from scratch on "
                "the clothing pictures (batch 128, 8 epochs), and reaches about 0.90 where it "
                "reached 0.99 on digits. To get the files (needs internet once):\n\n"
                "```\npython -m digitrec download fashion-mnist\n```\n\n"
                "or install Debian's `dataset-fashion-mnist` package; then reload this page.",
                icon=":material/checkroom:")
        return
    images, labels = shared.load_split("fashion-mnist", "train")
    names = shared.class_names("fashion-mnist")
    idx = data_helpers.sample_indices("fashion-mnist", "train", None, 16, 0)
    st.plotly_chart(components.digit_grid(images[idx], [names[labels[i]] for i in idx]),
                    key="lesson_fashion")
    if folder is None:
        open_page("Tuner", "Run a search on the Tuner page, then transfer its best model")
        return
    config = tuning.transfer_config(folder)
    info = None
    try:
        info = shared.run_store().info(config.key())
    except RunError:
        pass
    if lesson_helpers.complete(info):
        components.run_metrics(info.metrics)
    else:
        train_panel("transfer", config, info, how_long="8 epochs of a large CNN: tens of "
                    "minutes on a CPU, a few on a GPU")


def draw_step() -> None:
    open_page("Sketch", "Draw your own digit on the Sketch page")
    game()


# --------------------------------------------------------------------------- the game

def game() -> None:
    """"Guess what the model says": guess the model's answer (not the label), then reveal."""
    st.subheader("Game: guess what the model says")
    runs = shared.complete_runs("mnist")
    if not runs:
        st.info("No trained digit model yet: train one of the steps above first.")
        return
    default = lesson_helpers.step_info("cnn_bn")
    if "lesson_game_model" not in st.session_state and lesson_helpers.complete(default):
        st.session_state["lesson_game_model"] = default.run_id
    info = components.run_picker(runs, "lesson_game_model", "The class plays against (teacher "
                                 "picks)", age=False)
    ref = shared.ref_of(info)
    order = lesson_helpers.game_indices(ref)
    round_ = st.session_state.setdefault("lesson_game_round", 0) % len(order)
    index = int(order[round_])
    images, labels = shared.load_split("mnist", "test")
    probs = errors_helpers.test_probabilities(ref)[index]
    answer = int(np.argmax(probs))
    right, played = st.session_state.setdefault("lesson_game_score", (0, 0))
    c = st.columns([1, 2])
    c[0].image(components.enlarge(images[index], 168, invert=True))
    c[0].caption(f"Test digit #{index}")
    revealed = st.session_state.get("lesson_game_revealed")
    with c[1]:
        st.metric("Score", f"{right} of {played}")
        if revealed is None:
            guess = st.radio("What will the model say?", list(range(10)), horizontal=True,
                             index=None, key=f"lesson_game_guess_{round_}")
            if st.button("Reveal", key="lesson_game_reveal", disabled=guess is None,
                         type="primary"):
                st.session_state["lesson_game_score"] = lesson.score_guess((right, played),
                                                                          guess, answer)
                st.session_state["lesson_game_revealed"] = int(guess)
                st.rerun()
        else:
            verdict = "right" if revealed == answer else "wrong"
            st.markdown(f"You guessed **{revealed}**: the model says **{answer}** "
                        f"({probs[answer]:.0%}), so you were **{verdict}**. The true label is "
                        f"**{int(labels[index])}**.")
            st.html("<style>" + sketch_helpers.PROBS_CSS + "</style>"
                    + sketch_helpers.probability_html(probs, answer))
            if st.button("Next digit", key="lesson_game_next", type="primary"):
                st.session_state["lesson_game_round"] = round_ + 1
                st.session_state["lesson_game_revealed"] = None
                st.rerun()


# --------------------------------------------------------------------------- page

def render() -> None:
    number = current_step()
    header(number)
    step = lesson.STEPS[number - 1]
    nav(number, "top")
    if step.kind == "data":
        data_step()
    elif step.kind == "normalise":
        normalise_step()
    elif step.kind == "model":
        model_step(step)
    elif step.kind == "search":
        search_step()
    elif step.kind == "transfer":
        transfer_step()
    else:
        draw_step()
    nav(number, "bottom")


render()
