"""The IDX reader on hand-built bytes, the lookup order, and the real MNIST."""
import gzip
import hashlib

import numpy as np
import pytest

from digitrec import datasets
from digitrec.datasets import DatasetError, load_dataset, locate, parse_idx, read_idx


def idx_bytes(shape, payload=None, dtype_byte=0x08, magic=b"\x00\x00"):
    header = magic + bytes([dtype_byte, len(shape)])
    header += b"".join(int(n).to_bytes(4, "big") for n in shape)
    if payload is None:
        payload = bytes(int(np.prod(shape)))
    return header + payload


def write_split(folder, images, labels, split="train", compress=True):
    """Write an (images, labels) pair as IDX files the way the registry names them."""
    folder.mkdir(parents=True, exist_ok=True)
    img_name, lbl_name = datasets._IDX_FILES[split]
    for name, arr in ((img_name, images), (lbl_name, labels)):
        data = idx_bytes(arr.shape, arr.astype(np.uint8).tobytes())
        if compress:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


# --------------------------------------------------------------------------- reader

def test_parses_well_formed_images_and_labels():
    imgs = np.arange(2 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(2, 28, 28)
    out = parse_idx(idx_bytes(imgs.shape, imgs.tobytes()))
    assert out.shape == (2, 28, 28) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, imgs)
    labels = parse_idx(idx_bytes((3,), bytes([7, 0, 9])))
    assert labels.tolist() == [7, 0, 9]


def test_reads_gzip_and_raw_files_alike(tmp_path):
    data = idx_bytes((4,), bytes([1, 2, 3, 4]))
    (tmp_path / "raw").write_bytes(data)
    (tmp_path / "z.gz").write_bytes(gzip.compress(data))
    assert read_idx(tmp_path / "raw").tolist() == read_idx(tmp_path / "z.gz").tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("data, message", [
    (idx_bytes((2,), bytes(2), magic=b"\x01\x00"), "magic"),
    (idx_bytes((2,), bytes(2), dtype_byte=0x0D), "unsigned byte"),
    (b"\x00\x00\x08\x05" + bytes(40), "dimensions"),
    (b"\x00\x00\x08", "too short"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated header"),
    (idx_bytes((10, 28, 28), bytes(100)), "truncated"),
    (idx_bytes((2,), bytes(5)), "trailing"),
])
def test_malformed_bytes_raise_dataset_error(data, message):
    with pytest.raises(DatasetError, match=message):
        parse_idx(data, "bad.idx")


def test_huge_declared_dimensions_fail_before_allocating():
    # 4e9 x 4e9 x 4e9 would be an absurd allocation; it must be refused from the header alone.
    data = idx_bytes((4_000_000_000, 4_000_000_000, 4_000_000_000), payload=bytes(16))
    with pytest.raises(DatasetError, match="truncated"):
        parse_idx(data, "huge.idx")


def test_error_names_the_file(tmp_path):
    path = tmp_path / "broken-labels.gz"
    path.write_bytes(b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(DatasetError, match="broken-labels.gz"):
        read_idx(path)


def test_truncated_gzip_is_reported(tmp_path):
    blob = gzip.compress(idx_bytes((1000,)))
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match="cut.gz"):
        read_idx(path)


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


def test_label_out_of_range_and_count_mismatch():
    imgs = np.zeros((3, 28, 28), np.uint8)
    with pytest.raises(DatasetError, match="out of range"):
        datasets.check_pair(imgs, np.array([1, 10, 2], np.uint8))
    with pytest.raises(DatasetError, match="3 images but 2 labels"):
        datasets.check_pair(imgs, np.array([1, 2], np.uint8))
    with pytest.raises(DatasetError, match="3-D"):
        datasets.check_pair(np.zeros((3, 784), np.uint8), np.array([1, 2, 3], np.uint8))


# --------------------------------------------------------------------------- locating + loading

@pytest.fixture
def fake_registry(monkeypatch, tmp_path):
    """A tiny dataset 'toy' registered with real checksums; system/embedded dirs redirected."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 9], np.uint8)
    sha = {}
    for split in ("train", "test"):
        image_file, label_file = datasets._IDX_FILES[split]
        sha[image_file] = hashlib.sha256(idx_bytes(imgs.shape, imgs.tobytes())).hexdigest()
        sha[label_file] = hashlib.sha256(idx_bytes(labels.shape, labels.tobytes())).hexdigest()
    info = datasets.DatasetInfo(name="toy", title="Toy", class_names=tuple("0123456789"),
                                files=datasets._IDX_FILES, sha256=sha, how_to_get="make some")
    monkeypatch.setitem(datasets.DATASETS, "toy", info)
    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIR", tmp_path / "system")
    monkeypatch.setattr(datasets, "EMBEDDED_DIR", tmp_path / "embedded")
    monkeypatch.setenv("DIGITREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DIGITREC_DATA_DIR", raising=False)
    return imgs, labels, tmp_path


def test_lookup_order(fake_registry, monkeypatch):
    imgs, labels, root = fake_registry
    places = {
        "explicit": root / "explicit",
        "cache": root / "cache" / "toy",
        "system": root / "system" / "toy",
        "embedded": root / "embedded" / "toy",
    }
    for folder in places.values():
        write_split(folder, imgs, labels)
    # Explicit beats everything; then remove each in turn and the next one wins.
    assert locate("toy", "train", data_dir=places["explicit"])[0].parent == places["explicit"]
    monkeypatch.setenv("DIGITREC_DATA_DIR", str(places["explicit"]))
    assert locate("toy", "train")[0].parent == places["explicit"]
    monkeypatch.delenv("DIGITREC_DATA_DIR")
    for name in ("cache", "system", "embedded"):
        assert locate("toy", "train")[0].parent == places[name]
        for f in places[name].iterdir():
            f.unlink()
    with pytest.raises(DatasetError) as err:
        locate("toy", "train")
    # One clear error listing every place looked and how to get the data.
    for desc in ("user cache", "system datasets", "embedded copy", "make some"):
        assert desc in str(err.value)


def test_data_dir_with_dataset_subfolder(fake_registry):
    imgs, labels, root = fake_registry
    write_split(root / "all" / "toy", imgs, labels, compress=False)
    assert locate("toy", "train", data_dir=root / "all")[0] == root / "all" / "toy" / "train-images-idx3-ubyte"


def test_load_verifies_checksum_and_caches(fake_registry):
    imgs, labels, root = fake_registry
    write_split(root / "system" / "toy", imgs, labels)
    got_imgs, got_labels = load_dataset("toy", "train")
    np.testing.assert_array_equal(got_imgs, imgs)
    np.testing.assert_array_equal(got_labels, labels)
    assert list((root / "cache" / "arrays").glob("toy-*.npy")), "parsed arrays were not cached"
    # The second load comes from the cache even if the source disappears.
    for f in (root / "system" / "toy").iterdir():
        f.unlink()
    write_split(root / "system" / "toy", imgs, labels)
    again, _ = load_dataset("toy", "train")
    np.testing.assert_array_equal(again, imgs)


def test_checksum_mismatch_is_refused(fake_registry):
    imgs, labels, root = fake_registry
    tampered = imgs.copy()
    tampered[0, 0, 0] ^= 0xFF
    write_split(root / "system" / "toy", tampered, labels)
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset("toy", "train")


def test_damaged_array_cache_is_reparsed(fake_registry):
    imgs, labels, root = fake_registry
    write_split(root / "system" / "toy", imgs, labels)
    load_dataset("toy", "train")
    for f in (root / "cache" / "arrays").glob("*.npy"):
        f.write_bytes(b"garbage")
    got, _ = load_dataset("toy", "train")
    np.testing.assert_array_equal(got, imgs)


def test_unknown_names():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("cifar", "train")
    with pytest.raises(DatasetError, match="unknown split"):
        load_dataset("mnist", "validation")


def test_embedded_mnist_matches_its_checksums(monkeypatch):
    """The copy shipped in the package is the real MNIST (checked against the registry sums)."""
    monkeypatch.delenv("DIGITREC_DATA_DIR", raising=False)
    folder = datasets.EMBEDDED_DIR / "mnist"
    info = datasets.DATASETS["mnist"]
    for fname, sha in info.sha256.items():
        raw = gzip.decompress((folder / (fname + ".gz")).read_bytes())
        assert hashlib.sha256(raw).hexdigest() == sha


# --------------------------------------------------------------------------- the real data

def test_real_mnist(mnist_data_dir):
    train_x, train_y = load_dataset("mnist", "train", data_dir=mnist_data_dir)
    test_x, test_y = load_dataset("mnist", "test", data_dir=mnist_data_dir)
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.uint8
    assert train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert datasets.class_counts(train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert datasets.class_counts(test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_fashion_mnist(fashion_mnist):
    x, y = load_dataset("fashion-mnist", "test")
    assert x.shape == (10000, 28, 28)
    assert datasets.class_counts(y).tolist() == [1000] * 10
    assert datasets.dataset_info("fashion-mnist").class_names[9] == "Ankle boot"


def test_dataframe_and_csv_in_notebook_format():
    imgs = np.zeros((2, 28, 28), np.uint8)
    imgs[1, 0, 5] = 255
    df = datasets.to_dataframe(imgs, np.array([3, 7], np.uint8))
    assert list(df.columns[:3]) == ["label", "pixel_0", "pixel_1"] and df.columns[-1] == "pixel_783"
    assert df.shape == (2, 785) and df.loc[1, "pixel_5"] == 255
    csv = datasets.to_csv(imgs, np.array([3, 7], np.uint8)).decode().splitlines()
    assert csv[0].startswith("label,pixel_0,") and csv[2].startswith("7,0,0,0,0,0,255,")


def test_package_reexports_the_public_api():
    import digitrec
    for name in digitrec.__all__:
        assert getattr(digitrec, name) is not None, name
