"""Export a run's model for phones and servers (TFLite, ONNX, SavedModel), verified as it is made.

    result = export_model(run, "tflite", "out/")        # out/digitrec-<run_id>.tflite
    print(result.summary())                             # "tflite: 10000 test images, 100.00% ..."
    result = export_bytes(run, "onnx")                  # the same, in memory (a download button)

Formats (``FORMATS``):

* ``tflite``: TensorFlow's converter (``tf.lite.TFLiteConverter``, float32, builtin ops only),
  checked with LiteRT's interpreter (``ai-edge-litert``), the runtime phones use. Input
  ``float32 [N,28,28,1]`` (the file says [1,28,28,1]; resize the input tensor for batches).
* ``onnx``: Keras' own ``model.export(format="onnx")`` (tf2onnx underneath), checked with
  ``onnxruntime``. Input named after the model's input (``image``), dynamic batch.
* ``savedmodel``: a folder laid out as TensorFlow Serving wants a model base path: ``1/``
  (version 1) holds the SavedModel with the ``serve`` tag and a ``serving_default`` signature
  (input ``image``, output ``output_0``); checked by ``tf.saved_model.load`` and a call of that
  signature. Serve it with ``--model_base_path=/abs/path/of/the/folder``. In memory
  (``export_bytes``) it is a zip of that folder.
* ``zip``: the run itself, exactly as ``digitrec.transfer`` exports it (no conversion, nothing
  to verify); ``python -m digitrec import`` reads it back.

Every converted model is verified before anything is written: the exported model and the Keras
model both classify the WHOLE test split of the run's dataset (pixels /255, float32
[N,28,28,1], as the runs' models expect), and their predicted digits must agree on at least
``MIN_AGREEMENT`` (99.9%) of the images. The result carries that report (`Verification`:
agreement, the largest probability difference, both accuracies). Below the bar the export fails
with `ExportError` and writes nothing. A format that cannot hold one of the model's layers
(TFLite without the layer's op among its builtins; ONNX without an operator for it) fails with an
`ExportError` naming the layer: the converters' errors are read for the op and the layer it came
from (TFLite's MLIR locations, the ONNX graph's node names), and an ONNX graph is checked node by
node against the ONNX operator schemas, since tf2onnx writes an unusable file for an unsupported
op instead of failing.

Writes are atomic: a file goes to a temp file beside it and ``os.replace``; the SavedModel folder
is built in a hidden temp folder beside its destination and renamed into place. A failed export
leaves nothing behind, and an earlier export at the destination is kept until the new one is
complete.

Costs on the 2-core CPU this was written on (bench/bench_export.py): a few seconds per format for
the `fast` family, most of it in the converter; verifying 10,000 images is under a second.

TensorFlow, onnxruntime and LiteRT are imported on first use, so importing this module is cheap.
"""
from __future__ import annotations

import io
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitrec import transfer
from digitrec.datasets import load_dataset
from digitrec.files import atomic_write_bytes
from digitrec.preprocess import scale
from digitrec.runs import Run, RunError, RunStore

FORMATS = ("zip", "tflite", "onnx", "savedmodel")
CONVERTED = ("tflite", "onnx", "savedmodel")
MIN_AGREEMENT = 0.999     # fraction of test images whose predicted digit must match Keras'
SERVING_VERSION = "1"     # TensorFlow Serving's version folder inside the model base path
VERIFY_BATCH = 1000       # images per call while verifying (bounds memory)
SUFFIX = {"tflite": ".tflite", "onnx": ".onnx", "savedmodel": "-savedmodel", "zip": ".zip"}
_INSTALL_HINT = ("install the export packages: python3 -m pip install -r requirements.txt "
                 "(ai-edge-litert, onnx, onnxruntime, tf2onnx)")


class ExportError(ValueError):
    """An export failed or did not verify. The message says what was wrong and what to do;
    nothing was written."""


@dataclass(frozen=True)
class Verification:
    """How the exported model compared with the Keras model on the test split.

    Attributes:
        dataset: the dataset whose test split was used.
        images: how many test images were compared (the whole split).
        agreement: fraction of images where both predict the same digit (0..1).
        max_abs_diff: largest |p_exported - p_keras| over all images and classes.
        keras_accuracy, exported_accuracy: test accuracy of each.
        min_agreement: the bar it had to reach (MIN_AGREEMENT).
        seconds: wall time of the verification (both models on every image).
    """
    dataset: str
    images: int
    agreement: float
    max_abs_diff: float
    keras_accuracy: float
    exported_accuracy: float
    min_agreement: float
    seconds: float

    @property
    def passed(self) -> bool:
        return self.agreement >= self.min_agreement

    def summary(self) -> str:
        return (f"{self.images} {self.dataset} test images: same digit as the Keras model on "
                f"{self.agreement:.2%} (needs {self.min_agreement:.1%}), largest probability "
                f"difference {self.max_abs_diff:.1e}, accuracy {self.exported_accuracy:.4f} "
                f"(Keras {self.keras_accuracy:.4f})")


@dataclass(frozen=True)
class Exported:
    """One finished export.

    Attributes:
        run_id: the run exported.
        fmt: one of FORMATS.
        filename: the name to save it under (a folder name for a written SavedModel).
        path: where it was written (`export_model`), None for `export_bytes`.
        data: the bytes (`export_bytes`; a SavedModel is zipped), None for `export_model`.
        size_bytes: size of the file, or of all files in the SavedModel folder.
        verification: the agreement check (None for ``zip``: the run's own model, unconverted).
        seconds: wall time of the whole export, conversion and verification included.
        inputs, outputs: the exported model's input and output names (what a caller feeds).
    """
    run_id: str
    fmt: str
    filename: str
    path: Path | None
    data: bytes | None
    size_bytes: int
    verification: Verification | None
    seconds: float
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    def summary(self) -> str:
        where = str(self.path) if self.path is not None else self.filename
        head = f"{self.fmt}: {where} ({self.size_bytes / 1e6:.2f} MB, {self.seconds:.1f} s)"
        if self.verification is None:
            return head + "; the run's own files, no conversion to verify"
        return head + "; verified on " + self.verification.summary()


# --------------------------------------------------------------------------- public API

def export_model(run: Run, fmt: str, dest: str | os.PathLike | None = None, *,
                 store: RunStore | None = None, data_dir=None,
                 min_agreement: float = MIN_AGREEMENT) -> Exported:
    """Convert, verify and write the run's model in format `fmt`; return what was done.

    Args:
        run: a complete run (``RunStore.load(run_id)``).
        fmt: "tflite", "onnx", "savedmodel" or "zip" (see the module docstring).
        dest: the file (the folder, for savedmodel) to write, or an existing folder to put
            ``digitrec-<run_id>.<ext>`` in; default that name in the current folder. An earlier
            export there is replaced only once the new one has verified.
        store: the store holding the run, for ``zip`` (default: the run's own folder's store).
        data_dir: where to look for the dataset's IDX files (load_dataset's data_dir).
        min_agreement: the verification bar (default MIN_AGREEMENT, 0.999).
    Raises:
        ExportError: unknown format, a layer the format cannot hold (named), verification
            below the bar, missing export packages, or the destination cannot be written.
    """
    fmt = _checked_format(fmt)
    start = time.perf_counter()
    path = _destination(run, fmt, dest)
    if fmt == "zip":
        try:
            written = transfer.export_run(store or _store_of(run), run.run_id, path)
        except RunError as e:
            raise ExportError(str(e)) from None
        return Exported(run.run_id, fmt, written.name, written, None, written.stat().st_size,
                        None, time.perf_counter() - start)
    model = _float32_model(run.model())
    if fmt == "savedmodel":
        return _write_savedmodel(run, model, path, start, data_dir, min_agreement)
    data, verification, inputs, outputs = _convert_file(run, model, fmt, data_dir,
                                                        min_agreement)
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise ExportError(f"cannot write {path}: {e.strerror or e}; choose another place "
                          "(-o FILE)") from None
    return Exported(run.run_id, fmt, path.name, path, None, len(data), verification,
                    time.perf_counter() - start, inputs, outputs)


def export_bytes(run: Run, fmt: str, *, store: RunStore | None = None, data_dir=None,
                 min_agreement: float = MIN_AGREEMENT) -> Exported:
    """`export_model` in memory, for a download button: the result's ``data`` holds the file
    (a zip of the TensorFlow Serving folder for savedmodel) and ``filename`` its name.

    Nothing is written outside a private temporary folder, removed before returning.
    Raises ExportError as `export_model` does.
    """
    fmt = _checked_format(fmt)
    start = time.perf_counter()
    if fmt == "zip":
        try:
            data = transfer.export_bytes(store or _store_of(run), run.run_id)
        except RunError as e:
            raise ExportError(str(e)) from None
        return Exported(run.run_id, fmt, f"digitrec-run-{run.run_id}.zip", None, data,
                        len(data), None, time.perf_counter() - start)
    model = _float32_model(run.model())
    if fmt == "savedmodel":
        with tempfile.TemporaryDirectory(prefix="digitrec-export-") as tmp:
            folder = Path(tmp) / default_filename(run.run_id, fmt)
            done = _write_savedmodel(run, model, folder, start, data_dir, min_agreement)
            data = _zip_folder(folder)
        return Exported(run.run_id, fmt, folder.name + ".zip", None, data, len(data),
                        done.verification, time.perf_counter() - start, done.inputs,
                        done.outputs)
    data, verification, inputs, outputs = _convert_file(run, model, fmt, data_dir,
                                                        min_agreement)
    return Exported(run.run_id, fmt, default_filename(run.run_id, fmt), None, data, len(data),
                    verification, time.perf_counter() - start, inputs, outputs)


def default_filename(run_id: str, fmt: str) -> str:
    """``digitrec-<run_id>.tflite`` / ``.onnx``, ``digitrec-<run_id>-savedmodel`` (a folder),
    ``digitrec-run-<run_id>.zip`` (the run archive, as digitrec.transfer names it)."""
    fmt = _checked_format(fmt)
    if fmt == "zip":
        return f"digitrec-run-{run_id}.zip"
    return f"digitrec-{run_id}{SUFFIX[fmt]}"


def test_inputs(dataset: str, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """The whole test split as the runs' models take it: float32 [N,28,28,1] in [0,1], labels."""
    try:
        images, labels = load_dataset(dataset, "test", data_dir=data_dir)
    except ValueError as e:
        raise ExportError(f"cannot verify the export: {e}") from None
    return scale(images), np.asarray(labels)


# --------------------------------------------------------------------------- conversion

def _convert_file(run, model, fmt, data_dir, min_agreement):
    """(bytes, Verification, input names, output names) of a verified tflite / onnx model."""
    test = test_inputs(run.config.dataset, data_dir)  # before converting: fail fast
    with tempfile.TemporaryDirectory(prefix="digitrec-export-") as tmp:
        if fmt == "tflite":
            data = _to_tflite(model, Path(tmp))
            predict, inputs, outputs = _tflite_predictor(data)
        else:
            data = _to_onnx(model, Path(tmp))
            predict, inputs, outputs = _onnx_predictor(data)
    verification = _verify(run, model, predict, fmt, test, min_agreement)
    return data, verification, inputs, outputs


def _to_tflite(model, tmp: Path) -> bytes:
    """TFLite flatbuffer via a SavedModel (the converter's recommended TF2 path)."""
    import tensorflow as tf
    saved = tmp / "saved_model"
    _export_savedmodel(model, saved)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    # Builtin ops only: a file that needs TensorFlow's own kernels (Flex) does not run on a
    # phone's plain LiteRT runtime, so such a model is refused with the layer named instead.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return bytes(converter.convert())
    except Exception as e:  # noqa: BLE001 - ConverterError and friends: read, then explained
        raise ExportError(_unsupported_message(model, "TFLite", str(e))) from None


def _to_onnx(model, tmp: Path) -> bytes:
    """ONNX via Keras' own exporter (tf2onnx underneath), then checked op by op."""
    try:
        import onnx
        import tf2onnx  # noqa: F401 - Keras imports it lazily; fail here with the hint
    except ImportError as e:
        raise ExportError(f"ONNX export needs {e.name}: {_INSTALL_HINT}") from None
    path = tmp / "model.onnx"
    tf2onnx_log = logging.getLogger("tf2onnx")
    level = tf2onnx_log.level
    tf2onnx_log.setLevel(logging.CRITICAL)  # its unsupported-op errors are reported below
    # Keras' numpy-2 patch of tf2onnx probes np.object, which warns once per process.
    warnings.filterwarnings("ignore", message=r".*np\.object.*", category=FutureWarning)
    try:
        # An explicit signature: a freshly loaded model has never been called, which Keras'
        # exporter otherwise refuses.
        model.export(str(path), format="onnx", verbose=False,
                     input_signature=_input_signature(model))
    except Exception as e:  # noqa: BLE001 - converter failures are explained, not dumped
        raise ExportError(_unsupported_message(model, "ONNX", str(e))) from None
    finally:
        tf2onnx_log.setLevel(level)
    data = path.read_bytes()
    graph = onnx.load_from_string(data).graph
    # tf2onnx keeps an op it cannot convert as a node of the TF op's name: a file no runtime
    # loads. Every node must be an operator that ONNX defines.
    for node in graph.node:
        if not onnx.defs.has(node.op_type, node.domain or ""):
            raise ExportError(_unsupported_message(
                model, "ONNX", f"'{node.op_type}' op in node {node.name}", op=node.op_type))
    return data


def _export_savedmodel(model, folder: Path) -> None:
    """model.export(format="tf_saved_model"): tag 'serve', signature 'serving_default'."""
    try:
        model.export(str(folder), format="tf_saved_model", verbose=False)
    except Exception as e:  # noqa: BLE001
        raise ExportError(_unsupported_message(model, "SavedModel", str(e))) from None


def _write_savedmodel(run, model, dest: Path, start, data_dir, min_agreement) -> Exported:
    """Build the TensorFlow Serving folder beside `dest`, verify it, rename it into place."""
    if dest.exists() and not (dest / SERVING_VERSION / "saved_model.pb").is_file():
        raise ExportError(f"{dest} exists and is not a SavedModel export; choose another "
                          "place (-o FOLDER) or remove it")
    test = test_inputs(run.config.dataset, data_dir)  # before converting: fail fast
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the export from a serving account
    except OSError as e:
        raise ExportError(f"cannot write in {dest.parent}: {e.strerror or e}; choose another "
                          "place (-o FOLDER)") from None
    try:
        _export_savedmodel(model, tmp / SERVING_VERSION)
        predict, inputs, outputs = _savedmodel_predictor(tmp / SERVING_VERSION)
        verification = _verify(run, model, predict, "savedmodel", test, min_agreement)
        size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        _replace_folder(tmp, dest)
    except OSError as e:
        raise ExportError(f"cannot write {dest}: {e.strerror or e}; choose another place "
                          "(-o FOLDER)") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Exported(run.run_id, "savedmodel", dest.name, dest, None, size, verification,
                    time.perf_counter() - start, inputs, outputs)


def _replace_folder(new: Path, dest: Path) -> None:
    """Rename `new` to `dest`; an existing `dest` is moved aside first and removed after."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{secrets.token_hex(4)}")
        os.replace(dest, old)
    try:
        os.replace(new, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)  # put the earlier export back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- runtimes

def _tflite_predictor(data: bytes):
    """(predict(x) -> probs, input names, output names) on LiteRT's interpreter."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ExportError(f"TFLite export is checked with LiteRT: {_INSTALL_HINT}") from None
    interpreter = Interpreter(model_content=data)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    shape = [None]

    def predict(x):
        if shape[0] != len(x):  # the file holds batch 1; resize for this many images
            interpreter.resize_tensor_input(inp["index"], list(x.shape))
            interpreter.allocate_tensors()
            shape[0] = len(x)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    runner = interpreter.get_signature_runner()
    names = runner.get_input_details(), runner.get_output_details()
    return predict, tuple(names[0]), tuple(names[1])


def _onnx_predictor(data: bytes):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError(f"ONNX export is checked with onnxruntime: {_INSTALL_HINT}") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - an invalid graph: explained, not dumped
        raise ExportError(f"the ONNX file does not load in onnxruntime ({_first_line(e)}); "
                          "export as savedmodel or zip instead") from None
    name = session.get_inputs()[0].name
    outputs = tuple(o.name for o in session.get_outputs())
    return (lambda x: session.run(None, {name: x})[0]), (name,), outputs


def _savedmodel_predictor(folder: Path):
    """Load the SavedModel as TensorFlow Serving does (tag 'serve') and call its signature."""
    import tensorflow as tf
    loaded = tf.saved_model.load(str(folder), tags=["serve"])
    if "serving_default" not in loaded.signatures:
        raise ExportError("the SavedModel has no serving_default signature, which TensorFlow "
                          "Serving needs; report this as a bug in digitrec")
    signature = loaded.signatures["serving_default"]
    (name,) = signature.structured_input_signature[1].keys()
    outputs = tuple(signature.structured_outputs)

    def predict(x):
        return next(iter(signature(**{name: tf.constant(x)}).values())).numpy()
    return predict, (name,), outputs


# --------------------------------------------------------------------------- verification

def _verify(run, model, predict, fmt, test, min_agreement) -> Verification:
    """Both models on the whole test split `test` (images, labels); ExportError below
    `min_agreement`."""
    start = time.perf_counter()
    x, labels = test
    keras_probs = _batched(lambda b: model(b, training=False), x)
    exported = _batched(predict, x)
    if exported.shape != keras_probs.shape:
        raise ExportError(f"the {fmt} model outputs {exported.shape[1:]} per image where the "
                          f"Keras model gives {keras_probs.shape[1:]}; report this as a bug")
    same = keras_probs.argmax(1) == exported.argmax(1)
    result = Verification(
        dataset=run.config.dataset, images=len(x), agreement=float(same.mean()),
        max_abs_diff=float(np.abs(exported - keras_probs).max()),
        keras_accuracy=float((keras_probs.argmax(1) == labels).mean()),
        exported_accuracy=float((exported.argmax(1) == labels).mean()),
        min_agreement=float(min_agreement), seconds=time.perf_counter() - start)
    if not np.isfinite(exported).all() or not result.passed:
        raise ExportError(
            f"the {fmt} export of run {run.run_id} does not match the Keras model: "
            f"{result.summary()}. Nothing was written; export as "
            f"{'zip' if fmt == 'savedmodel' else 'zip or savedmodel'} instead, or report this "
            "as a bug with the run attached")
    return result


def _batched(fn, x: np.ndarray) -> np.ndarray:
    parts = [np.asarray(fn(x[i:i + VERIFY_BATCH]), np.float32)
             for i in range(0, len(x), VERIFY_BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


# --------------------------------------------------------------------------- helpers

# A TF op's place in the graph, as converters report it: ".../<layer>_1/<sub>/<Op>".
_OP_PATH = re.compile(r'"?([A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)+)')
_TFLITE_OP = re.compile(r"'tf\.(\w+)' op")


def _unsupported_message(model, target: str, error: str, op: str | None = None) -> str:
    """A message naming the layer (and op) the converter refused, and what to do instead."""
    op = op or (m.group(1) if (m := _TFLITE_OP.search(error)) else None)
    layer = _layer_in(model, error)
    other = "zip or savedmodel" if target != "SavedModel" else "zip"
    if layer is not None:
        what = f"layer '{layer.name}' ({type(layer).__name__})"
        if op:
            what += f", whose op {op} it has no equivalent for"
        return (f"{target} cannot hold {what}. Export this run as {other} instead, or "
                "train a model without that layer")
    return (f"{target} conversion failed ({_first_line(error)}). Export this run as {other} "
            "instead")


def _layer_in(model, error: str):
    """The model's layer whose name appears as a path component of an op in `error`.

    Keras' exported graphs name ops ``<model>_1/<layer>_1/<sub>/<Op>``: a component equal to a
    layer's name, or to it plus a ``_<n>`` suffix, points at that layer.
    """
    names = {layer.name: layer for layer in getattr(model, "layers", [])}
    for path in _OP_PATH.findall(error):
        for part in path.split("/")[1:]:
            base = re.sub(r"_\d+$", "", part)
            for candidate in (part, base):
                if candidate in names and candidate != model.name:
                    return names[candidate]
    return None


def _float32_model(model):
    """The model with every layer computing in float32 (a run trained under mixed precision by
    an older digitrec may hold float16 layers; the converters want float32). Same weights."""
    policies = {getattr(getattr(layer, "dtype_policy", None), "name", "float32")
                for layer in model.layers}
    if policies <= {"float32"}:
        return model

    def as_float32(node):
        if isinstance(node, dict):
            if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
                return {**node, "config": {**node.get("config", {}), "name": "float32"}}
            return {k: as_float32(v) for k, v in node.items()}
        if isinstance(node, list):
            return [as_float32(v) for v in node]
        return node

    rebuilt = model.__class__.from_config(as_float32(model.get_config()))
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _input_signature(model) -> list:
    """[tf.TensorSpec] of the model's one input, batch free, named as the model names it."""
    import tensorflow as tf
    (spec,) = model.inputs
    return [tf.TensorSpec([None, *spec.shape[1:]], spec.dtype, name=spec.name)]


def _checked_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def _destination(run: Run, fmt: str, dest) -> Path:
    name = default_filename(run.run_id, fmt)
    path = Path(dest) if dest is not None else Path.cwd() / name
    if path.is_dir() and not (fmt == "savedmodel"
                              and (path / SERVING_VERSION / "saved_model.pb").is_file()):
        path = path / name
    return path


def _store_of(run: Run) -> RunStore:
    return RunStore(run.path.parent)


def _zip_folder(folder: Path) -> bytes:
    """The folder as a zip with `folder.name/` at its top (unzip, then serve that folder)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, Path(folder.name) / path.relative_to(folder))
    return buf.getvalue()


def _first_line(error) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line[:300]
