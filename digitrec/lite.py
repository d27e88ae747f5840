"""One image at a time through LiteRT: a traced model function, converted in memory, checked.

    single = lite_single(concrete, "ModelTap")   # None when LiteRT cannot stand in
    outputs = single(image)                             # float32 [1,28,28,1] -> [array, ...]

Why: on this project's 2-core CPU a traced TensorFlow function (``tf.function`` with a fixed
signature, as ``digitrec.inference.Predictor`` and ``digitrec.trust.tap.ModelTap`` hold) runs the
`fast` model on one image in ~0.7 ms, nearly all of it TensorFlow's per-call overhead; LiteRT's
interpreter (``ai-edge-litert``, the runtime phones use, already a dependency for checking TFLite
exports) runs the same arithmetic in ~0.1 ms. A drawing class reads one image per stroke, so
the Sketch page's reading path uses this (issue 16: one reading end to end <= 1 ms).

The concrete function is converted with TensorFlow's own converter (float32, builtin ops only;
~0.4 s for `fast`), then checked: its outputs on a few probe images must equal the traced
function's to float32 round-off (``TOLERANCE``), output by output. Anything that goes wrong
(the package missing, an op the converter refuses, a mismatch) gives None and one log line, and
the caller keeps its TensorFlow path: LiteRT only ever makes a reading faster, never different.

An interpreter is not thread-safe, so each call takes one from a small pool (a new one is made
when all are busy: as many as there are concurrent readers, each ~the model's size).
``DIGITREC_LITERT=0`` in the environment turns this off.
"""
from __future__ import annotations

import logging
import os
import threading

import numpy as np

from digitrec import quiet

log = logging.getLogger(__name__)

TOLERANCE = 1e-4   # max |LiteRT - TensorFlow| / (1 + max |TensorFlow|), per output
PROBES = 4         # probe images compared at construction
ENV_SWITCH = "DIGITREC_LITERT"


def enabled() -> bool:
    """False when ``DIGITREC_LITERT=0`` (or "false"/"no"/"off") is set."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


class LiteSingle:
    """A checked LiteRT copy of a traced function, for inputs of batch size 1.

    Args:
        data: the TFLite flatbuffer.
        order: for each output of the traced function, the index of the matching LiteRT output.
        input_shape: the single input's shape, batch 1 (e.g. (1, 28, 28, 1)).
    """

    def __init__(self, data: bytes, order: list[int], input_shape: tuple):
        self.data = bytes(data)
        self.order = list(order)
        self.input_shape = tuple(input_shape)
        self._pool: list = []
        self._lock = threading.Lock()
        self._pool.append(self._new())

    def _new(self):
        from ai_edge_litert.interpreter import Interpreter

        # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on fd 2; one
        # thread is fastest for one small image (threads cost more to wake than they save).
        with quiet.captured_stderr():
            interpreter = Interpreter(model_content=self.data, num_threads=1)
            inp = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(inp, list(self.input_shape), strict=False)
            interpreter.allocate_tensors()
        outs = [d["index"] for d in interpreter.get_output_details()]
        return interpreter, inp, [outs[i] for i in self.order]

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        """Outputs (copies, float32) of the traced function for one image, batch 1."""
        with self._lock:
            slot = self._pool.pop() if self._pool else None
        if slot is None:
            slot = self._new()
        interpreter, inp, outs = slot
        # A failed call drops its interpreter (its state is unknown) and raises: the caller
        # goes back to TensorFlow (`call_or_none`).
        interpreter.set_tensor(inp, np.ascontiguousarray(image, dtype=np.float32))
        interpreter.invoke()
        result = [interpreter.get_tensor(i).copy() for i in outs]
        with self._lock:
            self._pool.append(slot)
        return result


def call_or_none(single: LiteSingle, image: np.ndarray, what: str) -> list[np.ndarray] | None:
    """``single(image)``, or None (logged) when LiteRT fails at run time: the caller then reads
    with TensorFlow and should drop ``single`` for good."""
    try:
        return single(image)
    except Exception as e:  # noqa: BLE001 - never worse than the TensorFlow path
        log.warning("LiteRT failed reading with the %s (%s: %s); reading with TensorFlow from now on",
                    what, type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
        return None


def lite_single(concrete, what: str = "model") -> LiteSingle | None:
    """A ``LiteSingle`` standing in for ``concrete`` (a traced function taking float32
    [None,28,28,1]) on one image, or None (logged once) when LiteRT is off, missing, cannot
    convert the model, or does not reproduce its outputs.

    Args:
        concrete: the ``tf.function``'s concrete function (its weights are frozen into the
            copy: do not train the model afterwards).
        what: a name for the log line.
    """
    if not enabled():
        return None
    try:
        import tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401  (present?)

        with quiet.captured_stderr():  # the converter's C++ progress lines
            # The owner is given as an empty module, on purpose: given the model that holds the
            # variables, this converter (TF 2.21) keeps them as resource variables whose
            # initialiser LiteRT never runs, and every output is NaN; given none, it warns that
            # the path is deprecated. With a stranger it freezes the weights into the file.
            converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf.Module())
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            data = converter.convert()
        shape = (1, *[int(d) for d in concrete.inputs[0].shape[1:]])
        probes = _probes(shape)
        expected = [[np.asarray(t) for t in tf.nest.flatten(concrete(tf.constant(p)))]
                    for p in probes]
        order = _match(data, shape, probes, expected)
        if order is None:
            log.warning("LiteRT does not reproduce the %s's outputs; reading with TensorFlow", what)
            return None
        return LiteSingle(data, order, shape)
    except Exception as e:  # noqa: BLE001 - any failure keeps the (slower, correct) TF path
        log.warning("LiteRT unavailable for the %s (%s: %s); reading with TensorFlow",
                    what, type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
        return None


def _probes(shape: tuple) -> list[np.ndarray]:
    """A blank image, a full one, random ones and, for 28x28 inputs, real MNIST test digits
    (what the detector and the temperature were fitted on): different enough that a swapped
    or wrong output cannot agree by chance."""
    rng = np.random.default_rng(0)
    out = [np.zeros(shape, np.float32), np.ones(shape, np.float32)]
    out += [rng.random(shape, dtype=np.float32) ** 3 for _ in range(PROBES - 2)]
    if shape == (1, 28, 28, 1):
        try:
            from digitrec.datasets import load_dataset
            images, _ = load_dataset("mnist", "test")
            out += [(images[i].astype(np.float32) / 255.0).reshape(shape) for i in (0, 1, 2, 3)]
        except Exception:  # noqa: BLE001 - no dataset at hand: the synthetic probes still check
            pass
    return out


def _match(data: bytes, shape: tuple, probes, expected) -> list[int] | None:
    """For each expected output, the LiteRT output that equals it on every probe; None when
    some output has no match. (The converter names outputs Identity, Identity_1, ...; their
    order is not promised, so they are matched by value.)"""
    trial = LiteSingle(data, list(range(len(expected[0]))), shape)
    got = [trial(p) for p in probes]
    if len(got[0]) != len(expected[0]):
        return None
    order = []
    for j in range(len(expected[0])):
        hits = [i for i in range(len(got[0]))
                if all(_close(g[i], e[j]) for g, e in zip(got, expected, strict=True))]
        if not hits:
            return None
        order.append(hits[0])
    return order


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    if got.shape != want.shape:
        return False
    scale = 1.0 + float(np.max(np.abs(want))) if want.size else 1.0
    return bool(np.all(np.isfinite(got))) and float(np.max(np.abs(got - want), initial=0.0)) <= TOLERANCE * scale
