"""Tests of cifar10-styles and render_style: CIFAR-10 in four style domains, the stand-in for PACS.

The CIFAR-10 files are written small in the official format (python pickles), with images drawn by
integer formulas (gradients and a box), so every check is exact and needs no picture."""

from __future__ import annotations

import hashlib
import pickle
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from gca import data as gd
from gca.data import STYLES, DatasetNotFoundError, DownloadError, load_dataset, render_style
from gca.data.loaders.rotated import assign_domains
from gca.data.prepare import _find_offline_script

N_PER_BATCH = 40  # labels i % 10: 4 per class per batch, 20 per class in train, 4 in test


def synthetic(n: int, size: int = 32, offset: int = 0) -> torch.Tensor:
    """uint8 (n, 3, size, size): per-image gradients and a bright box that moves with the index."""
    i = torch.arange(offset, offset + n).view(-1, 1, 1, 1)
    c = torch.arange(3).view(1, -1, 1, 1)
    y = torch.arange(size).view(1, 1, -1, 1)
    x = torch.arange(size).view(1, 1, 1, -1)
    img = (x * (5 + i % 7) + y * (3 + c) * 2 + 40 * c) % 256
    box = ((y - 8 - i % 9).abs() < 7) & ((x - 16 + i % 5).abs() < 9)
    return torch.where(box, (255 - img) // 2, img).to(torch.uint8)


def write_cifar10(root: Path) -> torch.Tensor:
    """The official layout with synthetic images; returns the training images in file order."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    train = []
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        x = synthetic(N_PER_BATCH, offset=k * N_PER_BATCH)
        train.append(x)
        batch = {"batch_label": name, "labels": [j % 10 for j in range(N_PER_BATCH)],
                 "data": x.reshape(N_PER_BATCH, -1).numpy(), "filenames": [f"f_{j}.png" for j in range(N_PER_BATCH)]}
        with open(base / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": gd.CIFAR10_CLASSES, "num_cases_per_batch": N_PER_BATCH, "num_vis": 3072}, fh,
                    protocol=2)
    return torch.cat(train[:5])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("styles")
    write_cifar10(path)
    return path


# ------------------------------------------------------------------------------------------------
# the dataset
# ------------------------------------------------------------------------------------------------


def test_styles_dataset_mirrors_rotated_digits(root):
    base = load_dataset("cifar10", "train", data_dir=root)
    ds = load_dataset("cifar10-styles", "train", data_dir=root)
    assert ds.name == "cifar10-styles" and ds.split == "train" and ds.classes == base.classes
    assert ds.images.shape == (200, 3, 32, 32) and ds.images.dtype == torch.uint8
    # the interface of rotated-digits: .domains (int64, one per image) indexes .domain_names (a list)
    assert ds.domains.dtype == torch.int64 and ds.domains.shape == ds.labels.shape
    assert ds.domain_names == list(STYLES) == ["photo", "sketch", "cartoon", "painting"]
    assert torch.equal(ds.labels, base.labels)  # same images, same order: only the pixels are restyled
    assert ds.description == "CIFAR-10 in 4 styles (photo, sketch, cartoon, painting)"
    assert len(ds.mean) == len(ds.std) == 3 and ds.checksum != base.checksum
    for d, style in enumerate(STYLES):
        m = ds.domains == d
        assert torch.equal(ds.images[m], render_style(base.images[m], style))
    # the domain-prior experiment's split: stratified by (class, domain)
    tr, va = gd.train_val_split(ds, 0.25, seed=0)
    assert len(tr) + len(va) == len(ds) and torch.bincount(va.domains, minlength=4).tolist() == [10] * 4


def test_each_image_in_exactly_one_domain_balanced_per_class(root):
    for split, per_class in (("train", 20), ("test", 4)):
        ds = load_dataset("cifar10-styles", split, data_dir=root)
        counts = torch.stack([torch.bincount(ds.domains[ds.labels == c], minlength=4) for c in range(10)])
        assert counts.tolist() == [[per_class // 4] * 4] * 10, split
    odd = load_dataset("cifar10-styles", "train", data_dir=root, styles=("photo", "sketch", "painting"))
    counts = torch.stack([torch.bincount(odd.domains[odd.labels == c], minlength=3) for c in range(10)])
    assert (counts.max(1).values - counts.min(1).values).max() <= 1 and counts.sum().item() == 200
    assert odd.domain_names == ["photo", "sketch", "painting"] and "3 styles" in odd.description


def test_assignment_is_seeded(root):
    a = load_dataset("cifar10-styles", "train", data_dir=root)
    b = load_dataset("cifar10-styles", "train", data_dir=root)
    other = load_dataset("cifar10-styles", "train", data_dir=root, seed=5)
    assert a.checksum == b.checksum and torch.equal(a.domains, b.domains)
    assert not torch.equal(a.domains, other.domains) and a.checksum != other.checksum
    # the test split draws with seed + 1, as rotated-digits does
    te = load_dataset("cifar10-styles", "test", data_dir=root)
    assert torch.equal(te.domains, assign_domains(te.labels, 4, 1))


def test_styles_options_and_registry(root, tmp_path, monkeypatch):
    assert gd.canonical_name("CIFAR10_Styles") == gd.canonical_name("cifar-10-styles") == "cifar10-styles"
    assert gd.is_available("cifar10-styles", root) and not gd.is_available("cifar10-styles", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py.*gca data fetch cifar10"):
        load_dataset("cifar10-styles", data_dir=tmp_path)
    with pytest.raises(ValueError, match="at least 2 distinct"):
        load_dataset("cifar10-styles", data_dir=root, styles=("photo",))
    with pytest.raises(ValueError, match="at least 2 distinct"):
        load_dataset("cifar10-styles", data_dir=root, styles=("photo", "photo"))
    with pytest.raises(ValueError, match="watercolour"):
        load_dataset("cifar10-styles", data_dir=root, styles=("photo", "watercolour"))
    with pytest.raises(TypeError, match="sequence of style names"):
        load_dataset("cifar10-styles", data_dir=root, styles="sketch")
    with pytest.raises(TypeError, match="seed"):
        load_dataset("cifar10-styles", data_dir=root, seed=0.5)
    with pytest.raises(TypeError, match="unexpected option"):
        load_dataset("cifar10-styles", data_dir=root, angles=(0, 90))

    def unreachable(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with pytest.raises(DownloadError, match=r"cs\.toronto\.edu/~kriz/cifar-10"):  # fetches what it is made from
        gd.fetch("cifar10-styles", tmp_path, progress=False)


# ------------------------------------------------------------------------------------------------
# render_style: numbers, not pictures
# ------------------------------------------------------------------------------------------------


def test_render_style_shapes_dtypes_and_differs_from_photo():
    x = synthetic(12)
    out = {s: render_style(x, s) for s in STYLES}
    assert torch.equal(out["photo"], x) and out["photo"].data_ptr() != x.data_ptr()
    for s, y in out.items():
        assert y.shape == x.shape and y.dtype == torch.uint8, s
    for s in ("sketch", "cartoon", "painting"):
        diff = (out[s].int() - x.int()).abs().float().mean(dim=(1, 2, 3))
        assert (diff > 8).all(), (s, diff)  # every image is visibly restyled
    for a, b in (("sketch", "cartoon"), ("sketch", "painting"), ("cartoon", "painting")):
        assert (out[a].int() - out[b].int()).abs().float().mean() > 8, (a, b)
    assert render_style(x[:0], "sketch").shape == (0, 3, 32, 32)


def test_sketch_is_grey_pencil_lines_on_white():
    x = synthetic(8)
    s = render_style(x, "sketch")
    assert torch.equal(s[:, 0], s[:, 1]) and torch.equal(s[:, 1], s[:, 2])  # R = G = B
    flat = torch.full((2, 3, 16, 16), 117, dtype=torch.uint8)
    assert (render_style(flat, "sketch") == 255).all()  # no edge: blank paper
    step = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    step[..., 8:] = 255  # a vertical edge between columns 7 and 8
    line = render_style(step, "sketch")[0, 0]
    dark_cols = torch.nonzero((line < 128).any(0)).flatten().tolist()
    assert dark_cols == [7, 8] and (line[:, :6] == 255).all() and (line[:, 10:] == 255).all()
    assert (s < 255).float().mean() < 0.6  # mostly paper


def test_cartoon_has_flat_posterised_colours_and_black_outlines():
    x = synthetic(8)
    c = render_style(x, "cartoon")
    assert set(torch.unique(c).tolist()) <= {0, 32, 96, 160, 224}
    black = (c == 0).all(1)
    assert 0 < black.float().mean() < 0.3  # outlines, not fill
    flat = torch.full((1, 3, 8, 8), 100, dtype=torch.uint8)
    assert (render_style(flat, "cartoon") == 96).all()  # 100 lies in the bin [64, 128): centre 96, no outline
    assert len(torch.unique(c.reshape(8, 3, -1).permute(0, 2, 1).reshape(-1, 3), dim=0)) < 64


def test_painting_is_smoothed_with_bounded_stroke_texture():
    flat = torch.full((3, 3, 16, 16), 100, dtype=torch.uint8)
    flat[1] = 30
    p = render_style(flat, "painting").int()
    assert ((p - flat.int()).abs() <= 10).all()  # grey stays grey: only the ±10 brush texture is added
    assert (p != flat.int()).any(), "the brush texture is missing"
    assert torch.equal(p[:, 0], p[:, 1])  # the texture is the same in every channel
    # strokes run along the diagonal: neighbours on it are closer than neighbours across it
    along = (p[..., 1:, 1:] - p[..., :-1, :-1]).abs().float().mean()
    across = (p[..., 1:, :-1] - p[..., :-1, 1:]).abs().float().mean()
    assert along < 0.5 * across


def test_render_style_is_per_image_and_pinned():
    x = synthetic(6)
    for s in STYLES:
        whole = render_style(x, s)
        assert all(torch.equal(render_style(x[k:k + 1], s)[0], whole[k]) for k in range(6)), s
    # integer arithmetic only: these hashes hold on every machine (a change here changes the dataset)
    pinned = {"photo": "b4d11b1783cc1009", "sketch": "52c38423f4c57c1c", "cartoon": "c5a2d71d56d98357",
              "painting": "947e157a1e308161"}
    x6 = _golden_batch()
    got = {s: hashlib.sha256(render_style(x6, s).numpy().tobytes()).hexdigest()[:16] for s in STYLES}
    assert got == pinned


def _golden_batch() -> torch.Tensor:
    i = torch.arange(6).view(-1, 1, 1, 1)
    c = torch.arange(3).view(1, -1, 1, 1)
    y = torch.arange(32).view(1, 1, -1, 1)
    x = torch.arange(32).view(1, 1, 1, -1)
    img = (x * (5 + i) + y * (3 + c) * 2 + 40 * c) % 256
    box = ((y - 8 - i).abs() < 7) & ((x - 16 + i).abs() < 9)
    return torch.where(box, (255 - img) // 2, img).to(torch.uint8)


def test_render_style_validates_its_input():
    x = synthetic(2)
    with pytest.raises(TypeError, match="uint8"):
        render_style(x.float(), "sketch")
    with pytest.raises(TypeError, match=r"\(N, 3, H, W\)"):
        render_style(x[:, :1], "sketch")
    with pytest.raises(TypeError, match="uint8"):
        render_style(x.numpy(), "sketch")
    with pytest.raises(ValueError, match="unknown style 'oil'"):
        render_style(x, "oil")
    with pytest.raises(ValueError, match="3 × 3"):
        render_style(x[..., :2, :2], "cartoon")


@pytest.mark.slow
def test_offline_cifar10_styles_render_fast_and_balanced(tmp_path):
    if _find_offline_script() is None:
        pytest.skip("shared/data/cifar10 not found")
    root = gd.prepare_offline_cifar10(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        tr = load_dataset("cifar10-styles", "train", data_dir=root)
        te = load_dataset("cifar10-styles", "test", data_dir=root)
        assert time.perf_counter() - t0 < 60  # one core, loading included
    finally:
        torch.set_num_threads(threads)
    for ds, n in ((tr, 1250), (te, 250)):
        counts = torch.stack([torch.bincount(ds.domains[ds.labels == c], minlength=4) for c in range(10)])
        assert counts.tolist() == [[n] * 4] * 10
    assert tr.description == "CIFAR-10 (JPEG copy) in 4 styles (photo, sketch, cartoon, painting)"
