"""Data page: explore the dataset the models learn from, as the reference notebook does.

Class balance, sample images, one image pixel by pixel (raw and scaled), the mean image per
class, the pixel-value distribution, the notebook's table view and a CSV export. All numbers
come from `digitrec` through `dashboard/helpers/data.py` (cached, with the figures); this file
only lays them out.
"""
import streamlit as st

import digitrec
from dashboard import components
from dashboard.helpers import data as data_helpers
from dashboard.helpers import shared

CSV_DEFAULT_ROWS = 1_000  # enough to look at in a spreadsheet; the whole split is ~110 MB
ALL = -1  # the sample grid's "all classes" choice (None would give the select box a clear button)


def _reshuffle() -> None:
    st.session_state["data_seed"] = st.session_state.get("data_seed", 0) + 1


def render() -> None:
    name = shared.current_dataset()
    names = shared.class_names(name)
    st.title(f"Data · {digitrec.dataset_info(name).title}")
    st.markdown(
        "Each image is a 28 × 28 grid of grey levels, 0 (background) to 255 (full ink). "
        "The notebook turns every image into **one table row**: a `label` column with the "
        "correct class, then `pixel_0` … `pixel_783`, the 784 pixels read row by row "
        "(`pixel_k` sits at row k // 28, column k % 28).")
    try:
        for part in ("train", "test"):  # fail early, with the fix in the message
            shared.load_split(name, part)
    except digitrec.DatasetError as e:
        st.error(str(e))
        st.stop()

    st.subheader("Images per class")
    left, right = st.columns(2)
    left.plotly_chart(data_helpers.class_histogram(name, "train"), key="data_hist_train")
    right.plotly_chart(data_helpers.class_histogram(name, "test"), key="data_hist_test")
    st.caption("The classes are close to balanced, so plain accuracy is a fair summary of a model.")

    split = st.radio("Split for the views below", ["train", "test"], horizontal=True,
                     key="data_split")
    images, labels = shared.load_split(name, split)

    st.subheader("Sample images")
    c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    label = c1.selectbox("Class", [ALL, *range(10)], key="data_sample_class",
                         format_func=lambda c: "all classes" if c == ALL else names[c])
    count = c2.slider("How many", 8, 64, 24, step=8, key="data_sample_count")
    c3.button("Reshuffle", on_click=_reshuffle, icon=":material/shuffle:")
    picked = data_helpers.sample_indices(name, split, None if label == ALL else label, count,
                               st.session_state.get("data_seed", 0))
    st.plotly_chart(components.digit_grid(images[picked], [f"{names[labels[i]]}<br>#{i}" for i in picked],
                                  columns=12), key="data_samples")

    st.subheader("One image, pixel by pixel")
    index = st.columns(3)[0].number_input(f"Image index (0 – {len(images) - 1:,})", 0,
                                          len(images) - 1, 0, key=f"data_image_{split}")
    st.markdown(
        "**Why normalise?** Networks train faster and more stably when inputs are small numbers on "
        "a common scale: with raw 0–255 values the first layer's sums are large, activations "
        "saturate and the gradients are uneven. Dividing by 255 maps every pixel into 0–1 without "
        "changing the picture, as the two maps show. Every digitrec model is fed 0–1 pixels.")
    raw, scaled = st.columns(2)
    raw.plotly_chart(data_helpers.pixel_heatmap(images[index], "%{z}",
                                                f"raw 0–255 · label {names[labels[index]]}"),
                     key="data_heat_raw")
    scaled.plotly_chart(data_helpers.pixel_heatmap(data_helpers.scaled(images[index]), "%{z:.2f}",
                                                   "scaled 0–1 (÷ 255)"),
                        key="data_heat_scaled")

    st.subheader("Mean image per class")
    st.plotly_chart(components.digit_grid(data_helpers.mean_images(name, split), list(names),
                                          columns=10, cell_px=110),
                    key="data_means")
    st.caption("The average of every image of a class: where the ink usually is. A model must "
               "learn what separates these shapes, and each digit's own variations around them.")

    st.subheader("Pixel intensity distribution")
    hist = data_helpers.intensity_histogram(name, split)
    st.plotly_chart(data_helpers.intensity_figure(hist), key="data_intensity")
    st.caption(f"{hist[0] / hist.sum():.0%} of all pixels are pure background (0); "
               "the ink is mostly near 0 or near 255, with few grey levels between (log scale).")

    st.subheader("The table, as in the notebook")
    c1, c2, c3 = st.columns([4, 1, 1], vertical_alignment="bottom")
    start, stop = c1.slider("Pixel columns", 0, 784, (160, 210), key="data_columns")
    rows = c2.number_input("Rows (head)", 1, 100, 8, key="data_head_rows")
    scale = c3.toggle("Scaled to 0–1", key="data_head_scaled")
    st.dataframe(data_helpers.head_table(name, split, rows, start, stop, scale), key="data_head")
    st.caption("Digits are centred, so the outer columns are almost all 0; the notebook looks at "
               "columns 160–210, the middle rows of the image.")

    st.subheader("Download as CSV")
    n = st.columns(3)[0].number_input(f"First rows of {split} (up to {len(images):,}: all)", 1,
                                      len(images), min(CSV_DEFAULT_ROWS, len(images)), step=1000,
                                      key=f"data_csv_rows_{split}")
    st.download_button(f"Download {n:,} rows as CSV", file_name=f"{name}-{split}-{n}.csv",
                       mime="text/csv", icon=":material/download:", on_click="ignore",
                       # Built only when clicked: the whole training split is ~110 MB of text.
                       data=lambda: data_helpers.csv_bytes(name, split, n))
    st.caption("Same format as the notebook's CSV: a header `label,pixel_0,…,pixel_783`, one image "
               "per row, about 1.8 kB each: the whole training split is ~110 MB and takes ~15 s to build.")


render()
