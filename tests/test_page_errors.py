"""AppTest of the Errors page (dashboard/views/errors.py) on tiny real runs, and its pure helpers.

The runs are trained once per module (500 images, 1 epoch: a few seconds): an MNIST softmax
regression, a tiny MNIST CNN (for Grad-CAM) and a Fashion-MNIST softmax. A click on the
confusion matrix cannot be simulated in AppTest; the selection parsing is tested here on the
selection states Streamlit delivers, and the click itself in tests/test_browser_errors.py.
"""
import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import digitrec
from dashboard.helpers import errors as errors_helpers
from dashboard.helpers import shared
from digitrec import evaluation
from digitrec.runs import RunStore, shipped_role
from digitrec.training import TrainConfig
from tests.devices import tol

PAGE = str(Path(__file__).resolve().parents[1] / "dashboard" / "views" / "errors.py")
TIMEOUT = 180  # seconds per script run: the first imports TensorFlow on two busy cores
TINY = dict(epochs=1, train_limit=500, batch_size=64)
TINY_CNN = dict(width1=4, width2=8, width3=8)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A run store with three tiny real runs: {"softmax", "cnn", "fashion"} -> Run."""
    root = tmp_path_factory.mktemp("error-runs")
    rs = RunStore(root)
    runs = {"softmax": rs.train_now(TrainConfig(dataset="mnist", family="softmax", **TINY)),
            "cnn": rs.train_now(TrainConfig(dataset="mnist", family="fast", hparams=TINY_CNN,
                                            seed=1, **TINY))}
    if digitrec.available("fashion-mnist"):
        runs["fashion"] = rs.train_now(TrainConfig(dataset="fashion-mnist", family="softmax", **TINY))
    return root, runs


def only_store(monkeypatch, root) -> None:
    """Point the page at the store in `root` alone: no shipped starter run beside it, so the
    tests see exactly the runs they trained."""
    monkeypatch.setenv("DIGITREC_HOME", str(root))
    monkeypatch.setattr(shared, "run_store", lambda: RunStore(root, starter_dir=None))


@pytest.fixture
def home(store, monkeypatch):
    root, runs = store
    only_store(monkeypatch, root)
    return runs


def mnist_test_labels():
    return digitrec.load_dataset("mnist", "test")[1].astype(np.int64)


def page(**state) -> AppTest:
    """The Errors page run alone, after one run with `state` preset in session state."""
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures on the page as {key: figure JSON}; the matrix (key err_cm_<n>) as "err_cm"."""
    figs = {c.key: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    return {("err_cm" if k.startswith("err_cm_") else k): f for k, f in figs.items()}


def values(array) -> np.ndarray:
    """A figure array: plotly sends numpy arrays as {"dtype", "bdata", "shape"} typed arrays."""
    if isinstance(array, dict):
        flat = np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
        shape = array.get("shape")
        return flat.reshape([int(s) for s in str(shape).split(",")]) if shape else flat
    return np.asarray(array)


def gallery_indices(at: AppTest) -> list[int]:
    """Test indices shown in the gallery, in order (from the clickable markers' customdata)."""
    traces = charts(at)["err_gallery"]["data"]
    return [int(t["customdata"][0]) for t in traces if t["type"] == "scatter"]


def shown_run(at: AppTest, runs) -> "digitrec.Run":
    run_id = at.selectbox(key="err_run").value
    return next(r for r in runs.values() if r.run_id == run_id)


# --------------------------------------------------------------------------- the page

def test_empty_store_says_how_to_get_a_run(run_home, monkeypatch):
    only_store(monkeypatch, run_home)
    at = page()
    assert "Errors" in at.title[0].value
    message = at.info[0].value
    assert "no trained model" in message and "**Models** page" in message
    assert "python -m digitrec train --dataset mnist" in message
    assert not at.get("plotly_chart") and not at.selectbox


def test_a_shipped_starter_run_is_explored_with_an_empty_store(run_home):
    shipped = RunStore(run_home).list_runs("mnist")
    assert shipped, "no starter run shipped in digitrec/starter (the package must carry one)"
    # The starter, the lesson bundle's and the reference runs are all shipped; the page opens the
    # best one that is not a reference run (those are listed last): the starter.
    best = max((r for r in shipped if shipped_role(r) != "reference"),
               key=lambda r: r.metrics.get("test_accuracy", 0.0))
    assert shipped_role(best) == "starter"
    at = page()
    assert at.selectbox(key="err_run").value == best.run_id
    assert "starter" in at.selectbox(key="err_run").format_func(best.run_id)
    assert set(charts(at)) == {"err_cm", "err_gallery"}


def test_page_runs_inside_the_app(home):
    at = AppTest.from_file(str(Path(PAGE).parents[1] / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.message for e in at.exception]
    at.switch_page("views/errors.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "Errors" in at.title[0].value
    assert set(charts(at)) == {"err_cm", "err_gallery"}


def test_matrix_summary_and_gallery_of_the_best_run(home):
    at = page()
    best = max((r for k, r in home.items() if k != "fashion"),
               key=lambda r: r.metrics["test_accuracy"])
    assert at.selectbox(key="err_run").value == best.run_id  # best first
    labels = mnist_test_labels()
    probs = best.test_probabilities()
    n_errors = int((probs.argmax(1) != labels).sum())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Errors (of 10,000)"] == f"{n_errors:,}"
    assert metrics["Test accuracy"] == f"{1 - n_errors / 10_000:.2%}"

    figs = charts(at)
    assert set(figs) == {"err_cm", "err_gallery"}
    heat = figs["err_cm"]["data"][0]
    cm = evaluation.confusion_matrix(labels, probs)
    assert np.array_equal(values(heat["text"]), cm)  # the numbers written in the cells
    cells = figs["err_cm"]["data"][1]["customdata"]  # the clickable cell centres
    assert len(cells) == 100 and cells[0] == [0, 0] and cells[12] == [1, 2]

    assert at.subheader[0].value == f"All errors: {n_errors:,} digits"
    expected = evaluation.errors(labels, probs).index[:16].tolist()
    assert gallery_indices(at) == expected  # most confident mistakes first, 16 per page
    titles = [a["text"] for a in figs["err_gallery"]["layout"]["annotations"] if a["text"]]
    first = evaluation.errors(labels, probs).iloc[0]
    assert titles[0].startswith(f"#{expected[0]} ✗ {first['pred']} ")
    assert titles[0].endswith(f"true {first['true']}")


def test_class_filters_change_the_gallery_and_outline_the_cell(home):
    at = page()
    run = shown_run(at, home)
    labels, probs = mnist_test_labels(), run.test_probabilities()
    pair = evaluation.most_confused_pairs(labels, probs, k=1).iloc[0]
    t, p, count = int(pair["true"]), int(pair["pred"]), int(pair["count"])
    at.selectbox(key="err_true").set_value(t)
    at.selectbox(key="err_pred").set_value(p).run()
    assert not at.exception
    assert at.subheader[0].value == f"True {t} read as {p}: {count:,} digit{'s' * (count != 1)}"
    shown = gallery_indices(at)
    assert shown and len(shown) == min(count, 16)
    assert all(labels[i] == t and probs[i].argmax() == p for i in shown)
    shape = charts(at)["err_cm"]["layout"]["shapes"][0]  # the filtered cell is outlined
    assert (shape["x0"], shape["y0"]) == (p - 0.5, t - 0.5)

    # Any prediction, correct ones too: every test digit of class t.
    at.selectbox(key="err_pred").set_value(errors_helpers.ANY)
    at.toggle(key="err_correct").set_value(True).run()
    assert at.subheader[0].value == f"Digits on true {t}: {(labels == t).sum():,} digits"
    shown = gallery_indices(at)
    assert all(labels[i] == t for i in shown)
    assert not charts(at)["err_cm"]["layout"].get("shapes")

    at.button(key="err_clear").click().run()  # back to all errors
    n_errors = int((probs.argmax(1) != labels).sum())
    assert at.subheader[0].value == f"All errors: {n_errors:,} digits"
    assert at.toggle(key="err_correct").value is False


def test_paging_walks_through_the_errors(home):
    at = page()
    run = shown_run(at, home)
    order = evaluation.errors(mnist_test_labels(), run.test_probabilities()).index.tolist()
    at.number_input(key="err_page").set_value(2).run()
    assert gallery_indices(at) == order[16:32]
    at.selectbox(key="err_per_page").set_value(32).run()
    assert gallery_indices(at) == order[32:64]  # page 2 of 32


def test_why_tab_explains_a_digit_with_saliency_gradcam_and_occlusion(home):
    cnn = home["cnn"]
    at = page(err_run=cnn.run_id, err_tab="Why did it say that?", err_example=7)
    images = at.get("image")
    assert len(images) == 4  # the digit, saliency, Grad-CAM, occlusion
    assert [i.captions[0].split(":")[0] for i in images] == [
        "the digit", "saliency", "Grad-CAM", "occlusion"]
    probs = cnn.test_probabilities()
    assert f"Digit **#7**: true class **{mnist_test_labels()[7]}**" in at.markdown[1].value
    assert f"({probs[7].max():.1%})" in at.markdown[1].value
    bars = charts(at)["err_why_probs"]["data"][0]
    assert np.allclose(values(bars["y"]), probs[7], atol=tol(1e-6))


def test_why_tab_without_convolutions_says_grad_cam_needs_one(home):
    at = page(err_run=home["softmax"].run_id, err_tab="Why did it say that?", err_example=3)
    assert len(at.get("image")) == 3
    assert "Grad-CAM needs a convolutional layer" in at.info[0].value
    # The right answer can be explained too when the model is wrong (here or on another digit).
    assert at.radio[0].options[0].startswith("its answer")


def test_per_class_tab_matches_the_library(home):
    at = page(err_tab="Per class")
    run = shown_run(at, home)
    table = at.dataframe[0].value
    expected = evaluation.per_class_metrics(mnist_test_labels(), run.test_probabilities())
    assert list(table.columns) == ["class", "precision", "recall", "f1", "support"]
    assert np.allclose(table["recall"], expected["recall"])
    assert table["support"].sum() == 10_000
    bars = charts(at)["err_per_class_chart"]["data"]
    assert [b["name"] for b in bars] == ["precision", "recall", "f1"]


def test_compare_tab_counts_what_run_b_fixes_and_breaks(home):
    a, b = home["softmax"], home["cnn"]
    at = page(err_run=a.run_id, err_tab="Compare two runs")
    assert at.selectbox(key="err_run_b").value == b.run_id  # the only other MNIST run
    diff = evaluation.compare_runs(mnist_test_labels(), a.test_probabilities(), b.test_probabilities())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["B fixes"] == f"{diff.n_fixed:,}"
    assert metrics["B breaks"] == f"{diff.n_broken:,}"
    assert metrics["Both wrong"] == f"{diff.n_both_wrong:,}"
    assert metrics["Both right"] == f"{diff.n_both_right:,}"
    assert [h.value for h in at.subheader] == [f"Fixed by B: {diff.n_fixed:,} digits",
                                               f"Broken by B: {diff.n_broken:,} digits"]
    verdicts = [e.value for e in [*at.success, *at.warning, *at.info]]
    assert any("McNemar" in v and diff.verdict in v for v in verdicts)
    fixed = charts(at)["err_cmp_fixed"]["layout"]["annotations"]
    assert len(fixed) == min(diff.n_fixed, 24)
    shown = [int(a["text"].split(" ")[0][1:]) for a in fixed]
    assert set(shown) <= set(diff.fixed.tolist())


def test_embedding_tab_pca_at_once_tsne_on_demand(home):
    run = home["cnn"]
    at = page(err_run=run.run_id, err_tab="Embedding", err_embed_n=200)
    figs = charts(at)
    assert set(figs) == {"err_embed_pixels", "err_embed_model"}
    for fig in figs.values():
        points = [row for t in fig["data"] for row in t["customdata"]]
        assert len(points) == 200  # every sampled digit, once
        crosses = [t for t in fig["data"] if t["marker"]["symbol"] == "x"]
        assert all(row[1] != row[2] for t in crosses for row in t["customdata"])  # mistakes
    at.radio(key="err_embed_method").set_value("tsne").run()
    assert not at.get("plotly_chart") and "press **Draw**" in at.info[0].value
    at.button(key="err_embed_go").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert set(charts(at)) == {"err_embed_pixels", "err_embed_model"}
    assert "t-SNE" in charts(at)["err_embed_model"]["layout"]["title"]["text"]


def test_fashion_mnist_uses_class_names_and_a_single_run_cannot_be_compared(home):
    if "fashion" not in home:
        pytest.skip("Fashion-MNIST files not found")
    names = list(digitrec.dataset_info("fashion-mnist").class_names)
    at = page(dataset="fashion-mnist")
    assert "Fashion-MNIST" in at.title[0].value
    assert at.selectbox(key="err_run").value == home["fashion"].run_id
    assert charts(at)["err_cm"]["layout"]["xaxis"]["ticktext"] == names
    assert at.selectbox(key="err_true").options[1:] == names
    at.session_state["err_tab"] = "Compare two runs"
    at.run()
    assert "only one run" in at.info[0].value


# --------------------------------------------------------------------------- pure helpers

def test_cell_from_selection_reads_the_clicked_cell():
    # As Streamlit delivers it: customdata a list, or a typed array turned into a dict.
    assert errors_helpers.cell_from_selection(
        {"points": [{"curve_number": 1, "customdata": [4, 9], "x": 9, "y": 4}]}) == (4, 9)
    assert errors_helpers.cell_from_selection({"points": [{"customdata": {"0": 3, "1": 5}}]}) == (3, 5)
    assert errors_helpers.cell_from_selection({"points": [], "box": [], "lasso": []}) is None
    assert errors_helpers.cell_from_selection({"points": [{"x": 1, "y": 2}]}) is None  # the heatmap
    assert errors_helpers.cell_from_selection(None) is None


def test_index_from_selection_reads_the_clicked_digit():
    assert errors_helpers.index_from_selection({"points": [{"customdata": [1234]}]}) == 1234
    assert errors_helpers.index_from_selection({"points": [{"customdata": 77}]}) == 77
    assert errors_helpers.index_from_selection({"points": [{"customdata": [5, 3, 8]}]}) == 5
    assert errors_helpers.index_from_selection({"points": []}) is None


def test_gallery_heading_and_page_bounds():
    names = [str(d) for d in range(10)]
    assert errors_helpers.gallery_heading(2, 7, False, 12, names) == "True 2 read as 7: 12 digits"
    assert errors_helpers.gallery_heading(4, errors_helpers.ANY, False, 1, names) == "Errors on true 4: 1 digit"
    assert errors_helpers.gallery_heading(errors_helpers.ANY, 3, True, 5, names) == "Digits read as 3: 5 digits"
    any_class = errors_helpers.ANY
    assert errors_helpers.gallery_heading(any_class, any_class, False, 0, names) == "All errors: 0 digits"
    assert errors_helpers.page_bounds(40, 1, 16) == (0, 16)
    assert errors_helpers.page_bounds(40, 3, 16) == (32, 40)
    assert errors_helpers.page_bounds(40, 9, 16) == (32, 40)  # past the end: the last page
    assert errors_helpers.page_bounds(0, 1, 16) == (0, 0)
