"""AppTest of the dashboard shell (dashboard/app.py) and the Data page on MNIST and Fashion-MNIST."""
import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import digitrec
from digitrec import datasets

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard"
TIMEOUT = 120  # seconds per script run: the first one parses MNIST on two busy cores
CHARTS = {"data_hist_train", "data_hist_test", "data_samples", "data_heat_raw",
          "data_heat_scaled", "data_means", "data_intensity"}


def data_page() -> AppTest:
    """The app, routed to the Data page, after one run on that page."""
    at = AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception
    at.switch_page("views/data.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures on the page as {key: figure JSON}."""
    return {c.key: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def values(array) -> list:
    """A figure array as a list: plotly 6+ sends numpy arrays as {"dtype", "bdata"} typed arrays."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def dataset_radio(at: AppTest):
    return next(r for r in at.sidebar.radio if r.key == "dataset")


def test_data_page_on_mnist():
    at = data_page()
    assert dataset_radio(at).value == "mnist"
    assert "MNIST" in at.title[0].value
    figs = charts(at)
    assert set(figs) == CHARTS
    train, test = figs["data_hist_train"]["data"][0], figs["data_hist_test"]["data"][0]
    assert train["x"] == [str(d) for d in range(10)]
    assert sum(values(train["y"])) == 60_000 and sum(values(test["y"])) == 10_000
    assert values(train["y"])[:2] == [5923, 6742]  # MNIST's known counts of 0 and 1
    table = at.dataframe[0].value
    assert list(table.columns) == ["label"] + [f"pixel_{i}" for i in range(160, 210)]
    assert table["label"].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]  # the notebook's head(8)
    assert table["pixel_160"].tolist()[:4] == [166, 0, 67, 255]
    assert at.download_button[0].label == "Download 1,000 rows as CSV"
    assert [h.value for h in at.subheader] == [
        "Images per class", "Sample images", "One image, pixel by pixel", "Mean image per class",
        "Pixel intensity distribution", "The table, as in the notebook", "Download as CSV"]


def test_data_page_on_fashion_mnist(fashion_mnist):
    at = data_page()
    dataset_radio(at).set_value("fashion-mnist").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "Fashion-MNIST" in at.title[0].value
    figs = charts(at)
    assert set(figs) == CHARTS
    names = list(digitrec.dataset_info("fashion-mnist").class_names)
    assert figs["data_hist_train"]["data"][0]["x"] == names
    assert values(figs["data_hist_test"]["data"][0]["y"]) == [1000] * 10
    # The mean-image grid is titled with the clothing names.
    assert [a["text"] for a in figs["data_means"]["layout"]["annotations"]] == names
    assert at.dataframe[0].value["label"].tolist()[:3] == [9, 0, 0]  # Fashion-MNIST's first labels


def test_column_slider_and_scaling_change_the_table():
    at = data_page()
    at.slider(key="data_columns").set_value((0, 5)).run()
    table = at.dataframe[0].value
    assert list(table.columns) == ["label", "pixel_0", "pixel_1", "pixel_2", "pixel_3", "pixel_4"]
    at.slider(key="data_columns").set_value((160, 170))
    at.toggle(key="data_head_scaled").set_value(True).run()
    table = at.dataframe[0].value
    assert list(table.columns) == ["label"] + [f"pixel_{i}" for i in range(160, 170)]
    assert table["pixel_161"].iloc[0] == pytest.approx(1.0)  # 255 / 255
    assert table["pixel_160"].iloc[0] == pytest.approx(166 / 255)
    assert table["label"].iloc[0] == 5  # the label is not scaled


def sample_titles(at: AppTest) -> list[str]:
    return [a["text"] for a in charts(at)["data_samples"]["layout"]["annotations"]]


def test_sample_grid_class_count_and_reshuffle():
    at = data_page()
    at.selectbox(key="data_sample_class").set_value(3)
    at.slider(key="data_sample_count").set_value(16).run()
    first = sample_titles(at)
    assert len(first) == 16 and all(t.startswith("3<br>#") for t in first)
    at.button[0].click().run()
    second = sample_titles(at)
    assert len(second) == 16 and all(t.startswith("3<br>#") for t in second)
    assert second != first  # a new seed draws other images


def test_heatmaps_show_raw_and_scaled_values_of_the_chosen_image():
    at = data_page()
    at.number_input(key="data_image_train").set_value(1).run()
    figs = charts(at)
    raw, scaled = figs["data_heat_raw"]["data"][0], figs["data_heat_scaled"]["data"][0]
    assert raw["texttemplate"] == "%{z}" and scaled["texttemplate"] == "%{z:.2f}"
    assert len(values(raw["z"])) == 784 and max(values(raw["z"])) == 255
    assert np.allclose(values(scaled["z"]), np.array(values(raw["z"])) / 255)
    assert "label 0" in figs["data_heat_raw"]["layout"]["title"]["text"]  # image 1 is a 0


def test_stale_or_missing_fashion_mnist_falls_back_with_a_message(tmp_path, monkeypatch, fashion_mnist):
    at = data_page()
    dataset_radio(at).set_value("fashion-mnist").run()
    assert "Fashion-MNIST" in at.title[0].value
    # Now the Fashion-MNIST files vanish: no data dir, empty cache, no system package.
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DIGITREC_DATA_DIR", str(empty))
    monkeypatch.setenv("DIGITREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIR", tmp_path / "missing")
    assert not digitrec.available("fashion-mnist")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    radio = dataset_radio(at)
    assert radio.value == "mnist" and radio.options == ["MNIST (handwritten digits)"]
    messages = " ".join(i.value for i in at.sidebar.info)
    assert "Fashion-MNIST" in messages and "dataset-fashion-mnist" in messages
    assert "MNIST" in at.title[0].value and "Fashion" not in at.title[0].value


def test_no_message_when_fashion_mnist_is_there(fashion_mnist):
    at = data_page()
    assert len(dataset_radio(at).options) == 2
    assert not at.sidebar.info


def test_data_page_runs_alone():
    # Design rule: every page works without the shell (MNIST by default).
    at = AppTest.from_file(str(DASHBOARD / "views" / "data.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.message for e in at.exception]
    assert set(charts(at)) == CHARTS

