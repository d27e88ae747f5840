"""What a channel looks for: the test images that make each channel of a layer fire hardest.

    top = top_activating(run, "conv1")           # computed once, then read from the run folder
    top.indices[7], top.values[7]                # the 9 test images channel 7 likes best
    cached_top_activating(run, "conv1")          # the cached answer or None: never computes

A channel's response to an image is the largest value of its map (max over positions: "is the
pattern anywhere in the image"). The whole test split goes through the model once, for all
channels of the chosen layer together, and the answer is saved beside the run as a sidecar
``inside-top<k>-<layer>.npz`` (atomically: temp file + ``os.replace``). Two sessions asking at
once do not both compute: the second waits on a lock (``wait=False``: gets None at once) and
then reads the first one's file. A run folder that cannot be written (the shipped starter run)
keeps its sidecar under the user cache, ``$DIGITREC_CACHE_DIR/inside/<run_id>/``.
The sidecar records the model file's size and modification time, so a run trained again under
the same id never shows a stale answer.
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from digitrec.datasets import load_dataset
from digitrec.files import atomic_write_bytes
from digitrec.inside.layers import INPUT_SIGNATURE, InsideError, inspector_for
from digitrec.preprocess import scale

SIDECAR_VERSION = 1
LOCK_NAME = ".inside.lock"


@dataclass(frozen=True)
class TopActivating:
    """The images that activate each channel of one layer most.

    Attributes:
        layer: the layer's name; k: images per channel.
        indices: int32 [channels, k], indices into ``dataset``'s ``split``, strongest first.
        values: float32 [channels, k], each image's peak value on that channel's map.
        dataset, split: where the indices point ("mnist", "test").
        n_images: how many images were scanned (the first n of the split).
        seconds: how long the computation took (when it was done).
        path: the sidecar file it lives in (None when nothing could be written).
    """
    layer: str
    k: int
    indices: np.ndarray
    values: np.ndarray
    dataset: str
    split: str
    n_images: int
    seconds: float
    path: Path | None

    def channel(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices [k], values [k]) for channel ``c``."""
        return self.indices[int(c)], self.values[int(c)]

    def images(self, c: int) -> np.ndarray:
        """uint8 [k, 28, 28]: channel ``c``'s top images themselves."""
        images, _ = load_dataset(self.dataset, self.split)
        return np.asarray(images[self.indices[int(c)]])


def _cache_folder(run) -> Path:
    """The run folder when writable; else a per-run folder under the user cache."""
    if not getattr(run, "shipped", False) and os.access(run.path, os.W_OK):
        return Path(run.path)
    base = os.environ.get("DIGITREC_CACHE_DIR") or Path.home() / ".cache" / "digitrec"
    return Path(base) / "inside" / run.run_id


def top_cache_path(run, layer: str, k: int = 9, limit: int | None = None) -> Path:
    """Where ``top_activating`` keeps its answer for this run, layer, k and limit."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", layer)
    tail = f"-first{int(limit)}" if limit else ""
    return _cache_folder(run) / f"inside-top{int(k)}-{safe}{tail}.npz"


def _model_stamp(run) -> str:
    st = os.stat(Path(run.path) / "model.keras")
    return f"{st.st_size}:{st.st_mtime_ns}"


def _dataset_of(run) -> str:
    config = getattr(run, "config", None)
    return getattr(config, "dataset", None) or "mnist"


def _read(path: Path, expected: dict) -> TopActivating | None:
    """The sidecar at ``path`` if it is readable and answers ``expected``; else None."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            indices, values = data["indices"].astype(np.int32), data["values"].astype(np.float32)
    except (OSError, ValueError, KeyError):
        return None   # missing or damaged: computed again and replaced
    if any(meta.get(key) != value for key, value in expected.items()) \
            or indices.shape != values.shape or indices.ndim != 2:
        return None
    return TopActivating(meta["layer"], meta["k"], indices, values, meta["dataset"],
                         meta["split"], meta["n_images"], meta["seconds"], path)


@contextmanager
def _locked(folder: Path, wait: bool):
    """An exclusive flock on ``folder/.inside.lock``; yields False if busy and not waiting."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)   # closing releases the lock (so does the death of the process)


def _expected(run, layer: str, k: int, limit: int | None) -> dict:
    return dict(version=SIDECAR_VERSION, layer=layer, k=int(k), limit=limit,
                dataset=_dataset_of(run), split="test", model=_model_stamp(run))


def cached_top_activating(run, layer: str, k: int = 9, limit: int | None = None):
    """The stored answer of ``top_activating`` for these arguments, or None. Never computes."""
    return _read(top_cache_path(run, layer, k, limit), _expected(run, layer, k, limit))


def channel_peaks(model, layer: str, images: np.ndarray, batch_size: int = 256,
                  progress=None) -> np.ndarray:
    """float32 [N, channels]: each image's peak value on each channel of ``layer``.

    Args:
        model: keras.Model; layer: a layer name; images: uint8 [N, 28, 28].
        batch_size: images per model call (default 256); progress: optional callable
            (done, total) after each batch.
    """
    sub = inspector_for(model).sub_model(layer)
    spatial = len(sub.outputs[0].shape) == 4

    def peaks(x):
        out = tf.cast(sub(x, training=False), tf.float32)
        return tf.reduce_max(out, axis=(1, 2)) if spatial else out

    function = tf.function(peaks, input_signature=INPUT_SIGNATURE, autograph=False)
    found = []
    for start in range(0, len(images), batch_size):
        batch = scale(np.asarray(images[start:start + batch_size]))
        found.append(function(tf.constant(batch)).numpy())
        if progress is not None:
            progress(min(start + batch_size, len(images)), len(images))
    return np.concatenate(found) if found else np.zeros((0, int(sub.outputs[0].shape[-1])), np.float32)


def top_activating(run, layer: str, k: int = 9, *, limit: int | None = None, model=None,
                   wait: bool = True, progress=None) -> TopActivating | None:
    """The ``k`` test images that activate each channel of ``layer`` most; cached on disk.

    Args:
        run: a complete ``digitrec.runs.Run`` (its folder, config.dataset and model).
        layer: a layer name (a conv, BN, relu or pool layer; dense layers rank their units).
        k: int, images per channel (default 9).
        limit: int or None, scan only the first ``limit`` test images (tests, quick lessons).
        model: the run's model if already loaded (default: ``run.model()``).
        wait: if another process or thread is computing the same folder's answer, wait for it
            (default True); False returns None at once instead.
        progress: optional callable (done, total) while computing.
    Returns:
        TopActivating, or None when ``wait=False`` and the computation is busy elsewhere.
    """
    path = top_cache_path(run, layer, k, limit)
    expected = _expected(run, layer, k, limit)
    found = _read(path, expected)
    if found is not None:
        return found
    model = run.model() if model is None else model
    inspector_for(model).index_of(layer)   # a wrong name fails here, before the data loads
    with _locked(path.parent, wait) as held:
        if not held:
            return None
        found = _read(path, expected)   # someone finished while we waited
        if found is not None:
            return found
        started = time.perf_counter()
        images, _ = load_dataset(expected["dataset"], "test")
        images = images[:limit] if limit else images
        if len(images) < k:
            raise InsideError(f"only {len(images)} test images to rank; ask for k <= that")
        peaks = channel_peaks(model, layer, images, progress=progress)      # [N, C]
        order = np.argsort(-peaks, axis=0, kind="stable")[:k].T             # [C, k]
        values = np.take_along_axis(peaks.T, order, axis=1)
        meta = dict(expected, n_images=len(images), seconds=time.perf_counter() - started)
        buffer = io.BytesIO()
        np.savez(buffer, indices=order.astype(np.int32), values=values.astype(np.float32),
                 meta=np.array(json.dumps(meta)))
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError:
            path = None   # an answer that cannot be kept is still an answer
    return TopActivating(layer, int(k), order.astype(np.int32), values.astype(np.float32),
                         meta["dataset"], "test", len(images), meta["seconds"], path)
