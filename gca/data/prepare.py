"""Building a dataset's official layout from local copies: the offline CIFAR-10, ImageNet-100 from ILSVRC-2012.

:func:`prepare_offline_cifar10` writes ``cifar-10-batches-py/`` from the JPEG copy kept beside the
repository (results on it are labelled "CIFAR-10 (JPEG copy)"). ImageNet cannot be downloaded
without registration; :func:`make_imagenet100` links the 100 CMC classes
(:data:`IMAGENET100_CLASSES`) out of an ILSVRC-2012 folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from gca.data.errors import DatasetNotFoundError
from gca.data.registry import resolve_data_dir

__all__ = ["IMAGENET100_CLASSES", "prepare_offline_cifar10", "make_imagenet100"]

#: The 100 ILSVRC-2012 classes of ImageNet-100 (Tian et al., CMC; github.com/HobbitLong/CMC, imagenet100.txt).
IMAGENET100_CLASSES: tuple[str, ...] = (
    'n02869837', 'n01749939', 'n02488291', 'n02107142', 'n13037406', 'n02091831', 'n04517823', 'n04589890',
    'n03062245', 'n01773797', 'n01735189', 'n07831146', 'n07753275', 'n03085013', 'n04485082', 'n02105505',
    'n01983481', 'n02788148', 'n03530642', 'n04435653', 'n02086910', 'n02859443', 'n13040303', 'n03594734',
    'n02085620', 'n02099849', 'n01558993', 'n04493381', 'n02109047', 'n04111531', 'n02877765', 'n04429376',
    'n02009229', 'n01978455', 'n02106550', 'n01820546', 'n01692333', 'n07714571', 'n02974003', 'n02114855',
    'n03785016', 'n03764736', 'n03775546', 'n02087046', 'n07836838', 'n04099969', 'n04592741', 'n03891251',
    'n02701002', 'n03379051', 'n02259212', 'n07715103', 'n03947888', 'n04026417', 'n02326432', 'n03637318',
    'n01980166', 'n02113799', 'n02086240', 'n03903868', 'n02483362', 'n04127249', 'n02089973', 'n03017168',
    'n02093428', 'n02804414', 'n02396427', 'n04418357', 'n02172182', 'n01729322', 'n02113978', 'n03787032',
    'n02089867', 'n02119022', 'n03777754', 'n04238763', 'n02231487', 'n03032252', 'n02138441', 'n02104029',
    'n03837869', 'n03494278', 'n04136333', 'n03794056', 'n03492542', 'n02018207', 'n04067472', 'n03930630',
    'n03584829', 'n02123045', 'n04229816', 'n02100583', 'n03642806', 'n04336792', 'n03259280', 'n02116738',
    'n02108089', 'n03424325', 'n01855672', 'n02090622',
)


def _find_offline_script() -> Path | None:
    """``make_cifar10.py`` of the offline copy: in ``$GCA_OFFLINE_DATA/cifar10/``, else in a ``shared/data``
    folder beside or above the repository; None if neither exists."""
    here = Path(__file__).resolve().parents[2]  # the repository root (gca/data/prepare.py)
    env = os.environ.get("GCA_OFFLINE_DATA")
    candidates = [Path(env) / "cifar10" / "make_cifar10.py"] if env else []
    candidates += [p / "shared" / "data" / "cifar10" / "make_cifar10.py" for p in (here, *here.parents)]
    return next((p for p in candidates if p.is_file()), None)


def prepare_offline_cifar10(data_dir: str | os.PathLike | None = None, *, script: str | os.PathLike | None = None,
                            force: bool = False) -> Path:
    """Write ``<data root>/cifar-10-batches-py`` from the offline JPEG copy of CIFAR-10 (about 17 s).

    Runs ``shared/data/cifar10/make_cifar10.py`` (found in ``$GCA_OFFLINE_DATA/cifar10/`` or in a
    ``shared/data`` folder beside or above the repository) unless the files already exist.
    Results on this copy should be labelled "CIFAR-10 (JPEG copy)". Returns the data root.
    """
    root = resolve_data_dir(data_dir)
    base = root / "cifar-10-batches-py"
    needed = [base / f"data_batch_{i}" for i in range(1, 6)] + [base / "test_batch", base / "batches.meta"]
    if not force and all(p.is_file() for p in needed):
        return root
    script = Path(script) if script is not None else _find_offline_script()
    if script is None or not script.is_file():
        raise DatasetNotFoundError("the offline CIFAR-10 copy (shared/data/cifar10/make_cifar10.py) was not found "
                                   "beside or above the repository; set $GCA_OFFLINE_DATA to the folder holding "
                                   "cifar10/make_cifar10.py, or fetch the official files with `gca data fetch cifar10`.")
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, str(script), str(root)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return root


def make_imagenet100(ilsvrc_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
                     link: bool = True) -> Path:
    """Build ``<data root>/imagenet100/{train,val}/<wnid>/`` from an ILSVRC-2012 folder.

    ``ilsvrc_dir`` must hold ``train/<wnid>/`` and ``val/<wnid>/`` (the validation images sorted
    into class folders, as the usual ``valprep.sh`` does). The 100 classes of
    :data:`IMAGENET100_CLASSES` are symlinked (``link=True``) or copied. Returns the data root.
    """
    src, root = Path(ilsvrc_dir).expanduser().resolve(), resolve_data_dir(data_dir)
    for split in ("train", "val"):
        missing = [w for w in IMAGENET100_CLASSES if not (src / split / w).is_dir()]
        if missing:
            raise DatasetNotFoundError(
                f"{src / split} lacks {len(missing)} of the 100 ImageNet-100 class folders (e.g. {', '.join(missing[:3])}); "
                "pass the ILSVRC-2012 folder holding train/<wnid>/ and val/<wnid>/.")
    for split in ("train", "val"):
        out = root / "imagenet100" / split
        out.mkdir(parents=True, exist_ok=True)
        for w in IMAGENET100_CLASSES:
            dest = out / w
            if dest.exists() or dest.is_symlink():
                continue
            if link:
                dest.symlink_to(src / split / w, target_is_directory=True)
            else:
                shutil.copytree(src / split / w, dest)
    return root
