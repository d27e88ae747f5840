"""The Models page's augmentation preview, under the "Augment" checkbox: a grid of random
augmentations of one test digit, drawn by `digitrec.augment.augment_preview`, which runs the
very layers `digitrec.training.train` puts before the model when it augments (the same
`augment.augmenter`, in training mode). "Re-roll" draws another grid (the next seed).

Nothing is computed until the expander is opened; a grid is cached per (dataset, digit, seed).
Called by dashboard/views/model.py (`render`).
"""
from __future__ import annotations

import streamlit as st

from dashboard import components
from dashboard.helpers import model as model_helpers
from dashboard.helpers import shared
from digitrec import augment as augmentation

VIEWS = 16          # augmentations in the grid
CELL_PX = 72        # one digit on screen
BY_CLASS, BY_INDEX = "A class", "A test image"
SEED = "model_aug_seed"  # session state: the preview's seed, +1 per re-roll


def _reroll() -> None:
    st.session_state[SEED] = st.session_state.get(SEED, 0) + 1


def chosen_digit(dataset: str, labels) -> int:
    """The test image to augment, by class (its first test image) or by index."""
    names = shared.class_names(dataset)
    left, right = st.columns([1, 2], vertical_alignment="bottom")
    by = left.radio("Digit", (BY_CLASS, BY_INDEX), key="model_aug_by", horizontal=True)
    if by == BY_CLASS:
        label = right.selectbox("Class", list(range(len(names))), key="model_aug_class",
                                format_func=names.__getitem__)
        return model_helpers.first_of_class(labels, label)
    return int(right.number_input("Test image #", 0, len(labels) - 1, step=1,
                                  key="model_aug_index"))


def augment_preview(dataset: str, augment: bool) -> None:
    """The expander; `augment`: whether the form trains with augmentation now."""
    box = st.expander("Preview the augmentation: what training sees", key="model_aug_open",
                      on_change="rerun", icon=":material/casino:")
    if not box.open:
        return
    with box:
        images, labels = shared.load_split(dataset, "test")
        index = chosen_digit(dataset, labels)
        seed = st.session_state.get(SEED, 0)
        views = model_helpers.augmented_views(dataset, index, VIEWS, seed)
        left, right = st.columns([1, 5])
        left.image(components.enlarge(images[index], size=2 * CELL_PX),
                   caption=f"test image #{index}, as stored")
        left.button("Re-roll", key="model_aug_reroll", on_click=_reroll,
                    icon=":material/casino:", help="Draw another set of random augmentations.")
        right.image([components.enlarge(v, size=CELL_PX) for v in views], width=CELL_PX,
                    caption=[f"#{i + 1}" for i in range(len(views))])
        state = "trains on views like these" if augment else \
            "would train on views like these with **Augment** on"
        st.caption(f"This configuration {state}: every epoch each training image is shifted "
                   f"(up to {augmentation.SHIFT:.0%} of its size), rotated (up to "
                   f"±{augmentation.ROTATION_DEG}°) and zoomed (±{augmentation.ZOOM:.0%}) at "
                   "random, by the same Keras layers drawn here. Test images are never "
                   "augmented.")
