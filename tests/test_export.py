"""Exports for phones and servers (digitrec.export): TFLite, ONNX, SavedModel, and the run zip.

Two tiny runs (the `fast` CNN and the `softmax` regression, one epoch on 500 images) are trained
once for the module. Each format is exported, verified on the whole MNIST test split (the
library's own check) and then read back here with its own runtime, independently of the
library: LiteRT for .tflite, onnxruntime for .onnx, tf.saved_model.load for the SavedModel.
A model with a layer the converters cannot hold (Resizing with lanczos3, whose TF op
ScaleAndTranslate has no TFLite builtin nor ONNX operator) must fail naming that layer.
"""
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from digitrec import export, transfer
from digitrec.datasets import load_dataset
from digitrec.export import ExportError, export_bytes, export_model
from digitrec.runs import STARTER_DIR, Run, RunStore
from digitrec.training import TrainConfig

FAMILIES = ("fast", "softmax")
CONVERTED = ("tflite", "onnx", "savedmodel")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    store = RunStore(tmp_path_factory.mktemp("export-store"))
    return {family: store.train_now(TrainConfig.for_family(family, epochs=1, train_limit=500))
            for family in FAMILIES}


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    """200 test images as the models take them: float32 [N,28,28,1] in [0,1]."""
    images, _ = load_dataset("mnist", "test")
    return (images[:200].astype(np.float32) / 255.0)[..., None]


def _read_back(fmt: str, path: Path, x: np.ndarray) -> np.ndarray:
    """Probabilities from the written file, through the format's own runtime."""
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter
        interpreter = Interpreter(model_path=str(path))
        inp = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    if fmt == "onnx":
        import onnxruntime as ort
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    import tensorflow as tf
    # As TensorFlow Serving does: the version folder, tag "serve", signature serving_default.
    loaded = tf.saved_model.load(str(path / "1"), tags=["serve"])
    return loaded.signatures["serving_default"](image=tf.constant(x))["output_0"].numpy()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fmt", CONVERTED)
def test_round_trip_agrees_with_keras(runs, sample, tmp_path, family, fmt):
    run = runs[family]
    result = export_model(run, fmt, tmp_path)
    check = result.verification
    assert check.dataset == "mnist" and check.images == 10_000  # the whole test split
    assert check.passed and check.agreement >= 0.999
    assert check.max_abs_diff < 1e-3
    assert abs(check.exported_accuracy - check.keras_accuracy) <= 0.001
    assert result.path == tmp_path / export.default_filename(run.run_id, fmt)
    assert result.size_bytes > 0 and result.inputs == ("image",)
    assert "verified on 10000 mnist test images" in result.summary()
    # Only the export itself is left: no temp files or folders beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == [result.path.name]
    # The written file, read by its own runtime, predicts what the Keras model does.
    keras_probs = run.model()(sample, training=False).numpy()
    probs = _read_back(fmt, result.path, sample)
    assert probs.shape == (len(sample), 10)
    np.testing.assert_allclose(probs, keras_probs, atol=1e-4)


def test_bytes_match_the_written_formats(runs, tmp_path):
    run = runs["softmax"]
    tflite = export_bytes(run, "tflite")
    assert tflite.path is None and tflite.filename == f"digitrec-{run.run_id}.tflite"
    assert tflite.data[4:8] == b"TFL3" and tflite.verification.passed
    saved = export_bytes(run, "savedmodel")
    names = zipfile.ZipFile(io.BytesIO(saved.data)).namelist()
    folder = f"digitrec-{run.run_id}-savedmodel"
    assert saved.filename == folder + ".zip"
    assert f"{folder}/1/saved_model.pb" in names
    assert any(n.startswith(f"{folder}/1/variables/") for n in names)
    # Unzipped, it is the folder TensorFlow Serving is pointed at.
    zipfile.ZipFile(io.BytesIO(saved.data)).extractall(tmp_path)
    x = np.zeros((2, 28, 28, 1), np.float32)
    assert _read_back("savedmodel", tmp_path / folder, x).shape == (2, 10)


def test_zip_is_the_run_archive(runs, tmp_path):
    run = runs["fast"]
    result = export_model(run, "zip", tmp_path)
    assert result.verification is None and result.path.name == f"digitrec-run-{run.run_id}.zip"
    names = set(zipfile.ZipFile(result.path).namelist())
    assert {"config.json", "model.keras", "metrics.json"} <= names
    data = export_bytes(run, "zip").data
    assert data == result.path.read_bytes()  # one archive, whichever way it is asked for
    # The shipped starter run too (read-only, outside any store), as digitrec.transfer does it.
    starter_id = next(p.name for p in STARTER_DIR.iterdir() if (p / "metrics.json").is_file())
    store = RunStore(tmp_path / "empty-store")
    starter = export_model(store.load(starter_id), "zip", tmp_path / "starter.zip")
    assert starter.path.read_bytes() == transfer.export_bytes(store, starter_id)


def test_savedmodel_replaces_an_earlier_export_only(runs, tmp_path):
    run = runs["softmax"]
    first = export_model(run, "savedmodel", tmp_path)
    (first.path / "stale.txt").write_text("from the earlier export")
    again = export_model(run, "savedmodel", first.path)  # the export folder itself as dest
    assert again.path == first.path and not (first.path / "stale.txt").exists()
    assert (again.path / "1" / "saved_model.pb").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.path.name]
    # A folder of that name that is not an export is never replaced.
    notes = tmp_path / "notes"
    other = notes / export.default_filename(run.run_id, "savedmodel")
    other.mkdir(parents=True)
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a SavedModel export"):
        export_model(run, "savedmodel", notes)  # a folder to put the export in
    assert sorted(p.name for p in other.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in notes.iterdir()) == [other.name]


def _run_with_model(run: Run, model, folder: Path) -> Run:
    """`run` with its model replaced by `model` (same config, metrics, history)."""
    folder.mkdir()
    model.save(folder / "model.keras")
    return Run(run.run_id, folder, run.config, run.metrics, run.history)


@pytest.fixture(scope="module")
def unconvertible(runs, tmp_path_factory) -> Run:
    """A run whose model holds a layer TFLite and ONNX cannot: Resizing(lanczos3), 'shrink'."""
    import keras
    model = keras.Sequential([
        keras.Input((28, 28, 1), name="image"),
        keras.layers.Resizing(14, 14, interpolation="lanczos3", name="shrink"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(10, activation="softmax", name="output")])
    return _run_with_model(runs["softmax"], model, tmp_path_factory.mktemp("bad") / "run")


@pytest.mark.parametrize("fmt, target", [("tflite", "TFLite"), ("onnx", "ONNX")])
def test_a_layer_the_format_cannot_hold_is_named(unconvertible, tmp_path, fmt, target):
    with pytest.raises(ExportError) as info:
        export_model(unconvertible, fmt, tmp_path)
    message = str(info.value)
    assert message.startswith(f"{target} cannot hold layer 'shrink' (Resizing)")
    assert "ScaleAndTranslate" in message and "zip or savedmodel" in message
    assert isinstance(info.value, ValueError)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_a_failed_verification_writes_nothing(runs, tmp_path):
    # No exported model can agree on more than 100% of the images: the bar cannot be met.
    for fmt in ("onnx", "savedmodel"):
        with pytest.raises(ExportError, match="does not match the Keras model.*Nothing was "
                                              "written"):
            export_model(runs["softmax"], fmt, tmp_path, min_agreement=1.0001)
    assert list(tmp_path.iterdir()) == []


def test_mixed_precision_models_export_in_float32(runs, tmp_path):
    import keras

    from digitrec.models import build_model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("softmax")
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert any(layer.dtype_policy.name == "mixed_float16" for layer in model.layers)
    model.set_weights(runs["softmax"].model().get_weights())
    run = _run_with_model(runs["softmax"], model, tmp_path / "run")
    result = export_model(run, "onnx", tmp_path / "out")
    assert result.verification.passed
    import onnx
    graph = onnx.load(str(result.path)).graph
    to_half = [n.name for n in graph.node if n.op_type == "Cast"
               and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in n.attribute)]
    assert to_half == []  # computed in float32 throughout


def test_bad_format_and_unwritable_destination(runs, tmp_path):
    with pytest.raises(ExportError, match="choose one of zip, tflite, onnx, savedmodel"):
        export_model(runs["softmax"], "coreml", tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    with pytest.raises(ExportError, match="cannot write"):
        export_model(runs["softmax"], "tflite", blocker / "model.tflite")
    with pytest.raises(ExportError, match="cannot write"):
        export_model(runs["softmax"], "savedmodel", blocker / "served")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
