"""Hostile input, fuzzed with hypothesis: the IDX reader, gzip, upload decoding + to_mnist, and
run-archive import. Any bytes must give a well-formed result or a ValueError-family error
(DatasetError, UploadError, TransferError) with a message; never another exception.

Two kinds of input: arbitrary bytes, and valid files (an MNIST digit as PNG and JPEG, IDX
images and labels, gzip, a run archive) with a few random mutations (byte flips, overwrites,
truncations, insertions, deletions), which get past the first checks and reach the parsers'
depths. Bounded: small inputs, a few hundred examples per target, derandomized so CI is
repeatable; set DIGITREC_FUZZ_EXAMPLES=5000 to search longer (then with fresh randomness).
Memory is checked as the process's peak RSS growth over each test.
"""
import gzip
import io
import os
import resource
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from digitrec import datasets
from digitrec.datasets import DatasetError, gunzip_if_needed, parse_idx
from digitrec.preprocess import decode_upload, to_mnist
from digitrec.runs import RUN_FILES, STARTER_DIR, RunStore

EXAMPLES = int(os.environ.get("DIGITREC_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                derandomize="DIGITREC_FUZZ_EXAMPLES" not in os.environ, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
MAX_GROWTH_MB = 600  # peak RSS growth allowed over one fuzz test (bounded parsers need far less)


def _digit() -> np.ndarray:
    images, _ = datasets.load_dataset("mnist", "test")
    return np.asarray(images[0])


def _encoded(fmt: str, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(255 - _digit()).convert(mode)  # dark ink on light paper, as photos
    image.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big")
                                                    for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


SEEDS = {
    "png": _encoded("PNG"),
    "png_rgba": _encoded("PNG", "RGBA"),
    "jpeg": _encoded("JPEG"),
}
IDX_SEEDS = {
    "images": _idx(np.stack([_digit()] * 3)),
    "labels": _idx(np.array([7, 2, 1, 0], np.uint8)),
}


@st.composite
def mutated(draw, seed: bytes):
    """`seed` with 1-8 random edits, half of them aimed at the first 64 bytes (the headers)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        size = max(len(data), 1)
        pos = draw(st.one_of(st.integers(0, min(63, size - 1)), st.integers(0, size - 1)))
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0xff, 0x7f, 0x80, 0x01]))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
    return bytes(data)


@pytest.fixture
def bounded_memory():
    """Fail the test if the process's peak RSS grew by more than MAX_GROWTH_MB during it."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    yield
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown < MAX_GROWTH_MB, f"peak memory grew by {grown:.0f} MB"


# --------------------------------------------------------------------------- checks

def check_idx(data: bytes) -> None:
    """parse_idx gives a uint8 array exactly as big as the bytes after its header, or a
    DatasetError."""
    try:
        array = parse_idx(data)
    except DatasetError as e:
        assert str(e)
        return
    assert isinstance(array, np.ndarray) and array.dtype == np.uint8
    assert 1 <= array.ndim <= 3 and array.size == len(data) - 4 - 4 * array.ndim


def check_gzip_idx(data: bytes) -> None:
    try:
        raw = gunzip_if_needed(data)
    except DatasetError as e:
        assert str(e)
        return
    assert isinstance(raw, bytes) and len(raw) <= datasets.MAX_IDX_BYTES
    check_idx(raw)


def check_upload(data: bytes) -> str:
    """decode_upload then to_mnist: an image or an UploadError/ValueError, never worse.
    Returns how far the bytes got, for hypothesis' statistics."""
    try:
        image = decode_upload(data)
    except ValueError as e:  # UploadError
        assert str(e)
        return "refused by decode_upload"
    assert image.dtype == np.uint8 and image.ndim in (2, 3) and image.size > 0
    try:
        pre = to_mnist(image)
    except ValueError as e:
        assert str(e)
        return "refused by to_mnist"
    assert pre.image.shape == (28, 28) and pre.image.dtype == np.float32
    assert np.isfinite(pre.image).all() and 0.0 <= pre.image.min() <= pre.image.max() <= 1.0
    assert pre.blank == (pre.reason != "")
    return "blank" if pre.blank else "read as a digit"


# --------------------------------------------------------------------------- IDX and gzip

@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes_into_the_idx_reader(data):
    check_idx(data)
    check_gzip_idx(data)


@FUZZ
@given(ndim=st.integers(0, 5), dtype=st.sampled_from([0x08, 0x09, 0x0B, 0x0D, 0x00]),
       dims=st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 6), min_size=5, max_size=5),
       payload=st.binary(max_size=512))
def test_idx_headers_with_any_shape(ndim, dtype, dims, payload):
    header = bytes([0, 0, dtype, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims[:ndim])
    check_idx(header + payload)


@FUZZ
@given(st.sampled_from(sorted(IDX_SEEDS)).flatmap(lambda k: mutated(IDX_SEEDS[k])))
def test_mutated_idx_files(data):
    check_idx(data)


@FUZZ
@given(st.binary(max_size=1024), st.booleans())
def test_gzip_wrapped_random_bytes(payload, idx_header):
    if idx_header:  # an IDX header in front, so the parser gets past its magic number
        payload = bytes([0, 0, 8, 1]) + len(payload).to_bytes(4, "big") + payload
    check_gzip_idx(gzip.compress(payload))


@FUZZ
@given(st.sampled_from(sorted(IDX_SEEDS)).flatmap(lambda k: mutated(gzip.compress(IDX_SEEDS[k]))))
def test_mutated_gzip_streams(bounded_memory, data):
    check_gzip_idx(data)


def test_gzip_bomb_stops_at_the_limit(monkeypatch, bounded_memory):
    monkeypatch.setattr(datasets, "MAX_IDX_BYTES", 1_000_000)
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(packer.compress(b"\0" * 1_000_000) for _ in range(50)) + packer.flush()
    assert len(bomb) < 100_000  # 50 MB of zeros in a few tens of KB
    with pytest.raises(DatasetError, match="decompresses to more than"):
        gunzip_if_needed(bomb)


# --------------------------------------------------------------------------- uploads

@FUZZ
@given(st.binary(max_size=4096))
def test_any_bytes_into_upload_decoding(data):
    check_upload(data)


@FUZZ
@given(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"]), st.binary(max_size=2048))
def test_image_magic_followed_by_garbage(magic, rest):
    check_upload(magic + rest)


@FUZZ
@given(st.sampled_from(sorted(SEEDS)).flatmap(lambda k: mutated(SEEDS[k])))
def test_mutated_png_and_jpeg(bounded_memory, data):
    event(check_upload(data))


# --------------------------------------------------------------------------- run archives

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
                    | st.sampled_from(["Lambda", "keras.layers", "builtins", "function", "Dense"]),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(["class_name", "module", "registered_name",
                                                       "config", "layers", "x"]), inner,
                                      max_size=4), max_leaves=30)


@FUZZ
@given(JSON)
def test_model_config_audit_takes_any_json(config):
    """The Lambda / foreign-module audit of a model's config.json returns a reason or "",
    whatever JSON it is given, and never passes a Lambda or a foreign module."""
    from digitrec.transfer import unsafe_objects
    reason = unsafe_objects(config)
    assert isinstance(reason, str)
    if _has_unsafe_node(config):
        assert reason


def _has_unsafe_node(node) -> bool:
    """An independent (recursive) oracle: a Lambda class, or a class from builtins."""
    if isinstance(node, list):
        return any(_has_unsafe_node(v) for v in node)
    if not isinstance(node, dict):
        return False
    name = node.get("class_name")
    if name == "Lambda" or (name is not None and node.get("module") == "builtins"):
        return True
    return any(_has_unsafe_node(v) for v in node.values())


def test_model_config_audit_on_deep_nesting():
    from digitrec.transfer import unsafe_objects
    deep = {"class_name": "Dense", "module": "keras.layers"}
    for _ in range(50_000):  # far deeper than Python's recursion limit
        deep = {"config": {"layers": [deep]}}
    assert unsafe_objects(deep) == ""
    deep["config"]["layers"].append({"class_name": "Lambda", "module": "keras.layers"})
    assert "Lambda" in unsafe_objects(deep)


ARCHIVE_SEED = None


def _archive_seed() -> bytes:
    global ARCHIVE_SEED
    if ARCHIVE_SEED is None:
        from digitrec.transfer import export_bytes
        run_id = next(p.name for p in STARTER_DIR.iterdir() if (p / "metrics.json").is_file())
        ARCHIVE_SEED = export_bytes(RunStore(Path(tempfile.gettempdir()) / "unused"), run_id)
    return ARCHIVE_SEED


def check_import(data: bytes) -> str:
    """import_run accepts a still-valid archive completely, or refuses it writing nothing;
    returns "accepted" or "refused"."""
    from digitrec.transfer import TransferError, import_run
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp) / "store", starter_dir=None)
        try:
            run = import_run(store, data)
        except TransferError as e:
            assert str(e)
            assert not store.root.exists(), "a refused import wrote into the store"
            return "refused"
        assert store.info(run.run_id).status == "complete"
        assert sorted(p.name for p in run.path.iterdir()) == sorted(RUN_FILES)
        return "accepted"


@pytest.fixture(scope="module")
def keras_warm():
    """Import TensorFlow and accept the unmutated archive once, before memory is measured."""
    assert check_import(_archive_seed()) == "accepted"


@settings(FUZZ, max_examples=max(EXAMPLES // 4, 20))
@given(st.binary(max_size=4096) | st.binary(max_size=512).map(lambda b: b"PK\x03\x04" + b))
def test_any_bytes_into_run_import(data):
    event(check_import(data))  # --hypothesis-show-statistics counts them


@settings(FUZZ, max_examples=max(EXAMPLES // 4, 20))
@given(st.data())
def test_mutated_run_archives(keras_warm, bounded_memory, data):
    seed = _archive_seed()
    # Aim at the zip's structure: the local headers at the start, the central directory at the
    # end (a flip inside compressed data only trips a CRC check).
    tail = max(len(seed) - 1024, 0)
    edits = data.draw(st.lists(st.tuples(st.integers(0, 63) | st.integers(tail, len(seed) - 1),
                                          st.integers(0, 255)), min_size=1, max_size=6))
    mutant = bytearray(seed)
    for pos, value in edits:
        mutant[pos] = value
    if data.draw(st.booleans()):
        del mutant[data.draw(st.integers(tail, len(seed))):]
    event(check_import(bytes(mutant)))
