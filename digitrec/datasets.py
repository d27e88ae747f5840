"""Datasets: a strict IDX reader, the dataset registry, finding the files, and fast loading.

    images, labels = load_dataset("mnist", "train")   # uint8 [60000,28,28], uint8 [60000]

Files are looked for, in order: an explicit directory (or ``DIGITREC_DATA_DIR``), the user
cache (``~/.cache/digitrec``; ``DIGITREC_CACHE_DIR`` overrides), the system directory Debian's
dataset packages use (``/usr/share/datasets/<name>``), the copy embedded in this package (MNIST
only, so the app works offline), and finally a download from the registry's mirrors, verified
by SHA-256 and written atomically. Parsed arrays are cached on disk as ``.npy`` so the second
load is a memory map, not a gunzip.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitrec.files import atomic_write_bytes

SPLITS = ("train", "test")
EMBEDDED_DIR = Path(__file__).parent / "data"
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
MAX_IDX_BYTES = 200_000_000  # no real digit set is near this; refuse before allocating


class DatasetError(ValueError):
    """A dataset file is missing, malformed or fails its checksum. The message says which and why."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    class_names: tuple[str, ...]
    # split -> (images file, labels file), names without ".gz"
    files: dict = field(default_factory=dict)
    # file name -> SHA-256 of the decompressed IDX bytes
    sha256: dict = field(default_factory=dict)
    mirrors: tuple[str, ...] = ()
    how_to_get: str = ""


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        title="MNIST (handwritten digits)",
        class_names=tuple(str(d) for d in range(10)),
        files=_IDX_FILES,
        sha256={
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        how_to_get="MNIST ships inside the digitrec package; reinstall it if the files are gone.",
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        title="Fashion-MNIST (clothing)",
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        files=_IDX_FILES,
        sha256={
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        },
        mirrors=("https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        how_to_get=("install Debian's package `dataset-fashion-mnist` (apt-get install "
                    "dataset-fashion-mnist), or put the four IDX files (.gz or raw) in a folder "
                    "and set DIGITREC_DATA_DIR to it, or run `python -m digitrec download "
                    "fashion-mnist` on a machine with internet access"),
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None


# --------------------------------------------------------------------------- IDX reader

def _decompressed_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e})") from None
    return gunzip_if_needed(raw, str(path))


def gunzip_if_needed(raw: bytes, path: str = "<bytes>") -> bytes:
    """Return IDX bytes, decompressing gzip data (bounded to MAX_IDX_BYTES)."""
    if raw[:2] == b"\x1f\x8b":
        # zlib with max_length bounds memory even for a decompression bomb
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = d.decompress(raw, MAX_IDX_BYTES + 1)
        except zlib.error as e:
            raise DatasetError(f"{path}: broken gzip data ({e}); delete the file and fetch it again") from None
        if len(out) > MAX_IDX_BYTES:
            raise DatasetError(f"{path}: decompresses to more than {MAX_IDX_BYTES} bytes; not a digit data set")
        if not d.eof:
            raise DatasetError(f"{path}: gzip stream is truncated; delete the file and fetch it again")
        return out
    return raw


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (uint8 only) into an array, validating everything before allocating.

    Args:
        data: the decompressed IDX bytes.
        source: a name for error messages (usually the file path).
    Raises:
        DatasetError: bad magic, wrong dtype, declared size that does not match the bytes present.
    """
    if len(data) < 4:
        raise DatasetError(f"{source}: too short to be an IDX file ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{source}: bad magic number (first two bytes must be zero); not an IDX file")
    if data[2] != 0x08:
        raise DatasetError(f"{source}: element type 0x{data[2]:02x} is not unsigned byte (0x08)")
    ndim = data[3]
    if not 1 <= ndim <= 3:
        raise DatasetError(f"{source}: {ndim} dimensions declared; digit data has 1 (labels) or 3 (images)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{source}: truncated header ({len(data)} bytes, {header} needed)")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = 1
    for n in shape:  # Python ints: no overflow, and nothing allocated yet
        expected *= n
    present = len(data) - header
    if expected != present:
        kind = "truncated" if present < expected else "has trailing bytes"
        raise DatasetError(f"{source}: {kind}: header declares shape {shape} = {expected} bytes, "
                           f"file holds {present}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: Path | str) -> np.ndarray:
    """Read an IDX file (gzip or raw) from disk. See `parse_idx`."""
    path = Path(path)
    return parse_idx(_decompressed_bytes(path), str(path))


def check_pair(images: np.ndarray, labels: np.ndarray, source: str = "") -> None:
    """Raise DatasetError unless images are [N,28,28]-like uint8 and labels [N] in 0..9."""
    where = f"{source}: " if source else ""
    if images.ndim != 3:
        raise DatasetError(f"{where}images must be 3-D [N, rows, cols], got shape {images.shape}")
    if labels.ndim != 1:
        raise DatasetError(f"{where}labels must be 1-D, got shape {labels.shape}")
    if len(images) != len(labels):
        raise DatasetError(f"{where}{len(images)} images but {len(labels)} labels")
    if labels.size and int(labels.max()) > 9:
        raise DatasetError(f"{where}label {int(labels.max())} out of range 0..9")


# --------------------------------------------------------------------------- locating files

def cache_dir() -> Path:
    if os.environ.get("DIGITREC_CACHE_DIR"):
        return Path(os.environ["DIGITREC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digitrec"


def _find_file(folder: Path, fname: str) -> Path | None:
    for candidate in (folder / fname, folder / (fname + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def candidate_dirs(name: str, data_dir: Path | str | None = None) -> list[tuple[str, Path]]:
    """Where files for `name` are looked for, in order, as (description, folder)."""
    explicit = data_dir or os.environ.get("DIGITREC_DATA_DIR")
    out: list[tuple[str, Path]] = []
    if explicit:
        explicit = Path(explicit)
        out += [("data directory", explicit / name), ("data directory", explicit)]
    out.append(("user cache", cache_dir() / name))
    out.append(("system datasets", SYSTEM_DATA_DIR / name))
    out.append(("embedded copy", EMBEDDED_DIR / name))
    return out


def locate(name: str, split: str, data_dir: Path | str | None = None, download: bool = False,
           progress: Callable[[int, int], None] | None = None) -> tuple[Path, Path]:
    """Find the (images, labels) files of one split, downloading them only if `download`.

    Raises:
        DatasetError: nothing found; the message lists every place looked and how to get the data.
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose 'train' or 'test'")
    wanted = info.files[split]
    places = candidate_dirs(name, data_dir)
    for _, folder in places:
        found = [_find_file(folder, f) for f in wanted]
        if all(found):
            return found[0], found[1]
    if download and info.mirrors:
        target = cache_dir() / name
        return tuple(download_file(info, f, target, progress) for f in wanted)  # type: ignore
    looked = "\n".join(f"  - {desc}: {folder}" for desc, folder in places)
    raise DatasetError(f"{info.title}: files {', '.join(wanted)} not found. Looked in:\n{looked}\n"
                       f"To get them: {info.how_to_get}.")


def download_file(info: DatasetInfo, fname: str, target_dir: Path,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Download `fname`.gz from the first mirror that answers; verify SHA-256; write atomically."""
    errors = []
    for mirror in info.mirrors:
        url = mirror + fname + ".gz"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                chunks, done = [], 0
                while chunk := resp.read(1 << 16):
                    chunks.append(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            blob = b"".join(chunks)
            raw = gzip.decompress(blob)
        except Exception as e:  # network errors come in many classes; all mean "next mirror"
            errors.append(f"{url}: {e}")
            continue
        digest = hashlib.sha256(raw).hexdigest()
        if digest != info.sha256[fname]:
            errors.append(f"{url}: checksum mismatch ({digest[:12]}…)")
            continue
        path = target_dir / (fname + ".gz")
        atomic_write_bytes(path, blob)
        return path
    raise DatasetError(f"could not download {fname} for {info.name}:\n  " + "\n  ".join(errors))


def print_progress(done: int, total: int) -> None:
    """A plain text progress bar on stderr, for downloads from the CLI."""
    if total:
        frac = done / total
        bar = "#" * int(30 * frac)
        sys.stderr.write(f"\r  [{bar:<30}] {frac:6.1%} of {total / 1e6:.1f} MB")
        if done >= total:
            sys.stderr.write("\n")
    else:
        sys.stderr.write(f"\r  {done / 1e6:.1f} MB")


# --------------------------------------------------------------------------- loading

def _verified_array(path: Path, expected_sha: str | None) -> np.ndarray:
    data = _decompressed_bytes(path)
    if expected_sha is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected_sha:
            raise DatasetError(f"{path}: checksum mismatch (SHA-256 {digest[:16]}…, expected "
                               f"{expected_sha[:16]}…); the file is damaged or not the real data set. "
                               f"Delete it and fetch it again.")
    return parse_idx(data, str(path))


def _array_cache_path(name: str, fname: str, sha: str) -> Path:
    return cache_dir() / "arrays" / f"{name}-{fname}-{sha[:16]}.npy"


def _load_cached(path: Path) -> np.ndarray | None:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None  # missing or damaged cache: just parse again
    return arr if arr.dtype == np.uint8 else None


def _save_cached(path: Path, arr: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or full cache only costs speed


def load_dataset(name: str, split: str, data_dir: Path | str | None = None,
                 download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Load one split as (images uint8 [N,28,28], labels uint8 [N]).

    Args:
        name: "mnist" or "fashion-mnist".
        split: "train" or "test".
        data_dir: a folder holding the IDX files (or a `<name>/` subfolder of them); default
            `DIGITREC_DATA_DIR`, then the usual places (see module docstring).
        download: fetch from the mirrors when no local copy exists (default False: offline).
    Returns read-only arrays (memory-mapped from the cache after the first load).
    """
    info = dataset_info(name)
    img_path, lbl_path = locate(name, split, data_dir, download,
                                progress=print_progress if download else None)
    arrays = []
    for path, fname in ((img_path, info.files[split][0]), (lbl_path, info.files[split][1])):
        sha = info.sha256[fname]
        cached = _array_cache_path(name, fname, sha)
        arr = _load_cached(cached) if cached.exists() else None
        if arr is None:
            arr = _verified_array(path, sha)
            _save_cached(cached, arr)
        arrays.append(arr)
    images, labels = arrays
    check_pair(images, labels, str(img_path.parent))
    return images, labels


def available(name: str, data_dir: Path | str | None = None) -> bool:
    """True when both splits of `name` can be found locally (no download)."""
    try:
        for split in SPLITS:
            locate(name, split, data_dir)
        return True
    except DatasetError:
        return False


# --------------------------------------------------------------------------- notebook views

def pixel_columns(start: int = 0, stop: int = 784) -> list[str]:
    return [f"pixel_{i}" for i in range(start, stop)]


def to_dataframe(images: np.ndarray, labels: np.ndarray, limit: int | None = None):
    """The notebook's table: one row per image, columns label, pixel_0 … pixel_783."""
    import pandas as pd

    n = len(images) if limit is None else min(limit, len(images))
    flat = np.asarray(images[:n]).reshape(n, -1)
    df = pd.DataFrame(flat, columns=pixel_columns(0, flat.shape[1]))
    df.insert(0, "label", np.asarray(labels[:n]))
    return df


def to_csv(images: np.ndarray, labels: np.ndarray, limit: int | None = None) -> bytes:
    """CSV in the notebook's format (header label,pixel_0,…; one image per row)."""
    return to_dataframe(images, labels, limit).to_csv(index=False).encode()


def class_counts(labels: Iterable[int]) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=10)
