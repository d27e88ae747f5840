"""AppTest of the Models page's export buttons (dashboard/views/model_export.py): TFLite and
ONNX of a tiny softmax run and TFLite of the shipped starter, converted once on click (never
on a rerun), with the verification summary beside the download; a failed export shows its
message while the rest of the page works. And the augmentation preview
(dashboard/views/model_augment.py): a grid of views, re-rolled, drawn by training's function."""
import numpy as np
import onnx
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.helpers import model as model_helpers
from dashboard.views import model_augment
from digitrec import augment, export
from digitrec.runs import RunStore
from digitrec.training import TrainConfig
from tests.test_page_model import DASHBOARD, TIMEOUT, frame, model_page

VERIFIED = "same digit as the Keras model on 100.00% (needs 99.9%)"


@pytest.fixture
def exports(monkeypatch):
    """Every export_bytes call the page makes: (run id, format, Exported or the error)."""
    calls = []
    real = export.export_bytes

    def spy(run, fmt, **kwargs):
        try:
            done = real(run, fmt, **kwargs)
        except export.ExportError as e:
            calls.append((run.run_id, fmt, e))
            raise
        calls.append((run.run_id, fmt, done))
        return done

    monkeypatch.setattr(export, "export_bytes", spy)
    model_helpers.export_file.clear()
    yield calls
    model_helpers.export_file.clear()


def page_for(config: TrainConfig) -> AppTest:
    """The Models page showing `config` (its run is then the one offered for download)."""
    at = AppTest.from_file(str(DASHBOARD / "views" / "model.py"), default_timeout=TIMEOUT)
    at.query_params.update(model_helpers.to_query(config))
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def downloads(at: AppTest) -> list[str]:
    return [d.label for d in at.download_button]


STARTER = "2feac434a46f803b"  # the shipped `fast` run (README)


def starter_config() -> TrainConfig:
    return next(i for i in RunStore().list_runs("mnist") if i.run_id == STARTER).config


def test_softmax_exports_tflite_and_onnx_once_each_with_their_check(run_home, exports):
    config = TrainConfig.for_family("softmax", epochs=1, train_limit=300)
    RunStore().train_now(config)
    at = page_for(config)
    assert not any(d.startswith("Download TFLite") for d in downloads(at))
    assert exports == []  # nothing converts while the page draws

    at.button(key="model_export_tflite").click().run()
    assert not at.exception, [e.message for e in at.exception]
    [(run_id, fmt, done)] = exports
    assert (run_id, fmt) == (config.key(), "tflite")
    assert done.data[4:8] == b"TFL3"  # a TFLite flatbuffer's identifier
    assert any(d.startswith("Download TFLite") for d in downloads(at))
    assert "model_export_tflite" not in [b.key for b in at.button]  # the download replaced it
    assert f"Verified: 10000 mnist test images: {VERIFIED}" in captions(at)

    at.run()  # a rerun (any widget) converts nothing again: the download comes from the cache
    at.toggle(key="model_quick").set_value(True).run()
    at.toggle(key="model_quick").set_value(False).run()
    assert len(exports) == 1
    assert any(d.startswith("Download TFLite") for d in downloads(at))
    assert at.button(key="model_export_onnx")  # the other formats are still to prepare

    at.button(key="model_export_onnx").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert [c[1] for c in exports] == ["tflite", "onnx"]
    graph = onnx.load_from_string(exports[-1][2].data).graph
    assert graph.node and graph.input[0].name == "image"
    assert any(d.startswith("Download ONNX") for d in downloads(at))
    assert captions(at).count(VERIFIED) == 2


def test_the_starter_exports_to_tflite(run_home, exports):
    at = page_for(starter_config())
    at.button(key="model_export_tflite").click().run()
    assert not at.exception, [e.message for e in at.exception]
    [(run_id, fmt, done)] = exports
    assert (run_id, fmt) == (STARTER, "tflite")
    assert done.verification.agreement >= export.MIN_AGREEMENT
    assert f"Verified: 10000 mnist test images: {VERIFIED}" in captions(at)
    assert f"Download TFLite ({done.size_bytes / 1e6:.2f} MB)" in downloads(at)


def test_a_failed_export_shows_its_message_and_the_page_still_works(run_home, monkeypatch):
    message = ("ONNX cannot hold layer 'conv1' (Conv2D), whose op Foo it has no equivalent for. "
               "Export this run as zip or savedmodel instead, or train a model without that layer")

    def refuse(run, fmt, **kwargs):
        raise export.ExportError(message)

    monkeypatch.setattr(export, "export_bytes", refuse)
    model_helpers.export_file.clear()
    at = page_for(starter_config())
    at.button(key="model_export_onnx").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert [e.value for e in at.error] == [message]
    assert not any(d.startswith("Download ONNX") for d in downloads(at))
    # The rest of the page: the other formats, the zip, the leaderboard; a retry is offered.
    assert at.button(key="model_export_tflite") and at.button(key="model_export_onnx")
    assert any(d.startswith("Download .zip") for d in downloads(at))
    assert "Leaderboard" in [s.value for s in at.subheader]
    at.run()
    assert [e.value for e in at.error] == [message]  # remembered, not converted again


# --------------------------------------------------------------------------- augmentation preview

def test_the_augmentation_preview_shows_views_and_rerolls(run_home):
    at = model_page()
    assert not at.image  # nothing is drawn until the preview is opened
    at.session_state["model_aug_open"] = True
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    original, grid = at.image
    assert original.captions == ["test image #3, as stored"]  # the first "0" of the test split
    assert len(grid.value) == model_augment.VIEWS == 16
    assert len(set(grid.value)) == 16  # 16 different pictures
    first = list(grid.value)

    at.button(key="model_aug_reroll").click().run()
    assert not at.exception, [e.message for e in at.exception]
    rerolled = list(at.image[1].value)
    assert len(rerolled) == 16 and not set(rerolled) & set(first)

    at.radio(key="model_aug_by").set_value(model_augment.BY_INDEX).run()
    at.number_input(key="model_aug_index").set_value(0).run()
    assert at.image[0].captions == ["test image #0, as stored"]
    assert not set(at.image[1].value) & set(rerolled)


def test_the_preview_draws_with_the_function_training_uses(run_home, monkeypatch):
    """The page's grid goes through digitrec.augment.augmenter, as training does (see
    tests/test_augment.py for training's side): replacing it changes what the page shows."""
    import keras

    seeds = []

    def identity(seed):  # an augmenter that changes nothing
        seeds.append(seed)
        return [keras.layers.Identity()]

    monkeypatch.setattr(augment, "augmenter", identity)
    model_helpers.augmented_views.clear()
    at = model_page()
    at.session_state["model_aug_open"] = True
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert seeds == [0]
    assert len(set(at.image[1].value)) == 1  # 16 copies of the digit itself
    model_helpers.augmented_views.clear()


# --------------------------------------------------------------------------- without the suspects

FLIPPED = list(range(5, 25))  # training images the fake cross-validation finds mislabelled


def fake_cross_validation(n: int = 3000) -> None:
    """A complete cross-validation of MNIST's first `n` training images in the test's store,
    confident in every given label except FLIPPED's (cleanlab ranks those first)."""
    from digitrec.datasets import load_dataset
    from digitrec.trust import label_jobs

    _, train_labels = load_dataset("mnist", "train")
    given = np.asarray(train_labels[:n], dtype=np.int64)
    believed = given.copy()
    believed[FLIPPED] = (given[FLIPPED] + 1) % 10
    probs = np.full((n, 10), 0.01, np.float32)
    probs[np.arange(n), believed] = 0.91
    config = label_jobs.CrossValConfig("mnist")
    label_jobs.save_result(label_jobs.CrossValResult(config, probs, np.arange(n), given,
                                                     {"seconds": 0}), RunStore())


def test_without_suspects_first_needs_the_cross_validation(run_home, monkeypatch):
    started = []
    monkeypatch.setattr(model_helpers, "submit_train_suspects",
                        lambda store, dataset: started.append(dataset))
    at = model_page()
    assert "Without the suspect labels" in [s.value for s in at.subheader]
    assert "needs a cross-validation of the training split" in captions(at)
    assert "model_sus_k" not in at.session_state  # no K to choose before the suspects exist
    at.button(key="model_sus_cv").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert started == ["mnist"]


def test_train_without_the_suspects_then_compare_on_the_errors_page(run_home):
    from digitrec.trust import labels

    config = TrainConfig.for_family("softmax", epochs=1, train_limit=300)
    store = RunStore()
    fake_cross_validation()
    base = store.train_now(config)
    cleaned = labels.without_suspects(config, len(FLIPPED), store)
    assert list(cleaned.exclude) == FLIPPED and cleaned.key() != config.key()
    other = store.train_now(cleaned)  # trained here: the page's click finds it in the store

    at = AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=TIMEOUT)
    at.query_params.update(model_helpers.to_query(config))
    at.run()
    at.switch_page("views/model.py").run()
    assert not at.exception, [e.message for e in at.exception]
    at.number_input(key="model_sus_k").set_value(len(FLIPPED)).run()
    at.button(key="model_sus_train").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error
    assert f"**Without {len(FLIPPED)} suspects** · run `{other.run_id}`" in \
        "\n".join(m.value for m in at.markdown)
    assert "points against the run with every label" in captions(at)
    assert "also differ in which images they saw" in captions(at)  # a quick lesson's caveat
    # The runs table says which run left images out.
    assert "300 − 20 suspects" in [str(v) for v in frame(at, "model_runs")["images"]]

    # Its settings open with a word about the images they no longer leave out.
    at.selectbox(key=f"model_download_run_{config.key()}").set_value(other.run_id).run()
    at.button(key="model_open_run").click().run()
    assert any(f"left out {len(FLIPPED)} suspect training images" in w.value for w in at.warning)

    at.button(key="model_sus_compare").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value.startswith("Errors")
    assert (at.session_state["err_run"], at.session_state["err_run_b"]) == \
        (base.run_id, other.run_id)
    assert at.session_state["err_tab"] == "Compare two runs"
    assert "B fixes" in [m.label for m in at.metric]  # the comparison itself is on screen
