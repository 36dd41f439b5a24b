"""The named datasets, each from a tiny copy of its official archives: the published file names, list files and
``.mat`` / ``.txt`` annotations, with small JPEGs whose red channel encodes their label (10 * label) so every test
can check that each image decodes under the label its list gives it."""

import hashlib
import io
import json
import logging
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from robustft.cli import main
from robustft.data import default_data_root, load_corrupted, load_dataset
from robustft.data.catalog import CATALOG, CORRUPTIONS, caltech, fgvc, food101, imagenet, stl10, vgg
from robustft.data.download import Remote
from robustft.errors import UserError
from support import error_line

Files = dict[str, bytes]  # path inside the archive -> content


def jpeg(label: int, size: tuple[int, int] = (12, 10)) -> bytes:
    """A flat JPEG whose red channel is ``10 * label``."""
    out = io.BytesIO()
    Image.new("RGB", size, (10 * label, 60, 120)).save(out, "JPEG", quality=95)
    return out.getvalue()


def text(lines: list[str]) -> bytes:
    """A text annotation file."""
    return ("\n".join(lines) + "\n").encode()


def mat(arrays: dict) -> bytes:
    """A MATLAB ``.mat`` file written by scipy."""
    out = io.BytesIO()
    scipy.io.savemat(out, arrays)
    return out.getvalue()


def pack(files: Files, path: Path) -> Remote:
    """``files`` as the archive ``path`` (``.zip``, ``.tar``, ``.tar.gz`` / ``.tgz``), served from a file URL with
    its md5; a single non-archive file is saved as itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    elif path.name.endswith((".tar", ".tar.gz", ".tgz")):
        with tarfile.open(path, "w" if path.suffix == ".tar" else "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        (data,) = files.values()
        path.write_bytes(data)
    return Remote(path.as_uri(), hashlib.md5(path.read_bytes()).hexdigest(), filename=path.name)


def write_imagenet(root: Path, flat_val: bool) -> list[str]:
    """An ILSVRC-2012 folder: train/<wnid>/<wnid>_<i>.JPEG, and val/ by wnid or flat with the devkit's meta.mat
    (ILSVRC2012_ID order differs from the sorted wnids, as in the real devkit) and ground-truth file."""
    wnids = ["n01440764", "n01443537", "n01484850"]
    ilsvrc_id = {"n01440764": 3, "n01443537": 1, "n01484850": 2}
    for k, w in enumerate(wnids):
        for i in range(3):
            _write(root / "train" / w / f"{w}_{i}.JPEG", jpeg(k))
    val_labels = [2, 0, 1, 1, 0]  # label (sorted-wnid index) of ILSVRC2012_val_0000000{1..5}
    for i, k in enumerate(val_labels, 1):
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        _write(root / "val" / name if flat_val else root / "val" / wnids[k] / name, jpeg(k))
    if flat_val:
        data = root / "ILSVRC2012_devkit_t12" / "data"
        synsets = np.array([(ilsvrc_id[w], w, f"words {w}", 0) for w in wnids],
                           dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")])
        _write(data / "meta.mat", mat({"synsets": synsets}))
        _write(data / "ILSVRC2012_validation_ground_truth.txt",
               text([str(ilsvrc_id[wnids[k]]) for k in val_labels]))
    return wnids


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ---------------------------------------------------------------------------------------------------------------
# one builder per dataset: {archive file name: {member: bytes}}, the class names and the split sizes expected
# ---------------------------------------------------------------------------------------------------------------
Archives = dict[str, Files]


def build_caltech256() -> tuple[Archives, list[str], dict[str, int]]:
    classes = ["001.ak47", "002.american-flag", "257.clutter"]
    images = {f"256_ObjectCategories/{c}/{c[:3]}_{i:04d}.jpg": jpeg(k) for k, c in enumerate(classes)
              for i in range(1, 5)}
    ids = {"train": [1, 2], "val": [3], "test": [4]}
    splits = {f"{s}.json": {f"{s}.json": json.dumps({f"{c}/{c[:3]}_{i:04d}.jpg": k for k, c in enumerate(classes)
                                                     for i in v}).encode()} for s, v in ids.items()}
    return {"256_ObjectCategories.tar": images, **splits}, classes, {"train": 6, "val": 3, "test": 3}


def build_caltech101() -> tuple[Archives, list[str], dict[str, int]]:
    counts = {"BACKGROUND_Google": 2, "Faces": 31, "accordion": 33}
    images = {f"101_ObjectCategories/{c}/image_{i:04d}.jpg": jpeg(k - 1 if k else 9)
              for k, (c, n) in enumerate(counts.items()) for i in range(1, n + 1)}
    return {"101_ObjectCategories.tar.gz": images}, ["Faces", "accordion"], {"train": 60, "test": 4}


def build_cub200() -> tuple[Archives, list[str], dict[str, int]]:
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    rows = [(i, classes[i % 2], f"{classes[i % 2]}/{classes[i % 2][4:]}_{i:04d}_{100 + i}.jpg") for i in range(1, 8)]
    base = "CUB_200_2011"
    files = {f"{base}/images/{path}": jpeg(i % 2) for i, _, path in rows}
    files |= {f"{base}/images.txt": text([f"{i} {path}" for i, _, path in rows]),
              f"{base}/image_class_labels.txt": text([f"{i} {i % 2 + 1}" for i, _, _ in rows]),
              f"{base}/train_test_split.txt": text([f"{i} {int(i <= 4)}" for i, _, _ in rows]),
              f"{base}/classes.txt": text([f"{k + 1} {c}" for k, c in enumerate(classes)])}
    return {"CUB_200_2011.tgz": files}, classes, {"train": 4, "test": 3}


def build_stanford_dogs() -> tuple[Archives, list[str], dict[str, int]]:
    classes = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog"]
    names = {k: [f"{c}/{c[:9]}_{100 + i}.jpg" for i in range(3)] for k, c in enumerate(classes)}
    images = {f"Images/{n}": jpeg(k) for k, ns in names.items() for n in ns}

    def listing(pick: slice) -> bytes:
        chosen = [(n, k) for k, ns in names.items() for n in ns[pick]]
        return mat({"file_list": np.array([[n] for n, _ in chosen], dtype=object),
                    "labels": np.array([[k + 1] for _, k in chosen], dtype=np.uint8)})

    lists = {"train_list.mat": listing(slice(0, 2)), "test_list.mat": listing(slice(2, 3)),
             "file_list.mat": listing(slice(0, 3))}
    return {"images.tar": images, "lists.tar": lists}, classes, {"train": 6, "test": 3}


def build_fgvc_aircraft() -> tuple[Archives, list[str], dict[str, int]]:
    classes = ["707-320", "Cessna 172", "DHC-1"]
    data = "fgvc-aircraft-2013b/data"
    ids = {"train": [1001, 1002, 1003], "val": [1004, 1005], "test": [1006, 1007, 1008]}
    label = {i: i % 3 for v in ids.values() for i in v}
    files = {f"{data}/images/{i:07d}.jpg": jpeg(k) for i, k in label.items()}
    files[f"{data}/variants.txt"] = text(classes)
    files |= {f"{data}/images_variant_{s}.txt": text([f"{i:07d} {classes[label[i]]}" for i in v])
              for s, v in ids.items()}
    return {"fgvc-aircraft-2013b.tar.gz": files}, classes, {s: len(v) for s, v in ids.items()}


def build_flowers102() -> tuple[Archives, list[str], dict[str, int]]:
    labels = [3, 1, 2, 1, 3, 2, 1, 2]  # 1-based class of image i + 1
    return ({"102flowers.tgz": {f"jpg/image_{i:05d}.jpg": jpeg(y - 1) for i, y in enumerate(labels, 1)},
             "imagelabels.mat": {"imagelabels.mat": mat({"labels": np.array([labels], dtype=np.uint8)})},
             "setid.mat": {"setid.mat": mat({"trnid": np.array([[2, 1, 3]]), "valid": np.array([[4, 5]]),
                                             "tstid": np.array([[8, 6, 7]])})}},
            [str(c) for c in range(1, 103)], {"train": 3, "val": 2, "test": 3})


def build_oxford_pets() -> tuple[Archives, list[str], dict[str, int]]:
    classes = ["Abyssinian", "american_bulldog", "Bengal"]
    rows = [(f"{c}_{i}", k) for k, c in enumerate(classes) for i in range(1, 4)]
    return ({"images.tar.gz": {f"images/{n}.jpg": jpeg(k) for n, k in rows},
             "annotations.tar.gz": {"annotations/trainval.txt": text([f"{n} {k + 1} 1 {k + 1}" for n, k in rows[::2]]),
                                    "annotations/test.txt": text([f"{n} {k + 1} 1 {k + 1}" for n, k in rows[1::2]])}},
            classes, {"train": 5, "test": 4})


def build_dtd() -> tuple[Archives, list[str], dict[str, int]]:
    classes = ["banded", "blotchy", "braided"]
    names = {c: [f"{c}/{c}_{i:04d}.jpg" for i in range(1, 7)] for c in classes}
    files = {f"dtd/images/{n}": jpeg(k) for k, c in enumerate(classes) for n in names[c]}
    for s, picks in (("train", (0, 1)), ("val", (2, 3)), ("test", (4, 5))):
        files[f"dtd/labels/{s}1.txt"] = text([names[c][i] for c in classes for i in picks])
        files[f"dtd/labels/{s}2.txt"] = text([names[c][picks[0]] for c in classes])  # only partition 1 is read
    return {"dtd-r1.0.1.tar.gz": files}, classes, {"train": 6, "val": 6, "test": 6}


def build_food101() -> tuple[Archives, list[str], dict[str, int]]:
    classes = ["apple_pie", "baby_back_ribs"]
    ids = {c: [f"{c}/{1000 + 7 * k + i}" for i in range(4)] for k, c in enumerate(classes)}
    files = {f"food-101/images/{n}.jpg": jpeg(k) for k, c in enumerate(classes) for n in ids[c]}
    files |= {"food-101/meta/classes.txt": text(classes),
              "food-101/meta/train.txt": text([n for c in classes for n in ids[c][:3]]),
              "food-101/meta/test.txt": text([n for c in classes for n in ids[c][3:]])}
    return {"food-101.tar.gz": files}, classes, {"train": 6, "test": 2}


def build_tinyimagenet() -> tuple[Archives, list[str], dict[str, int]]:
    wnids = ["n02124075", "n01443537", "n04067472"]  # wnids.txt is unsorted; classes are the sorted wnids
    label = {w: k for k, w in enumerate(sorted(wnids))}
    base = "tiny-imagenet-200"
    files = {f"{base}/wnids.txt": text(wnids), f"{base}/words.txt": text([f"{w}\twords" for w in wnids])}
    files |= {f"{base}/train/{w}/images/{w}_{i}.JPEG": jpeg(label[w], (64, 64)) for w in wnids for i in range(2)}
    files |= {f"{base}/train/{w}/{w}_boxes.txt": text([f"{w}_0.JPEG\t0\t0\t10\t10"]) for w in wnids}
    val = [(f"val_{i}.JPEG", wnids[i % 3]) for i in range(4)]
    files |= {f"{base}/val/images/{n}": jpeg(label[w], (64, 64)) for n, w in val}
    files[f"{base}/val/val_annotations.txt"] = text([f"{n}\t{w}\t0\t0\t63\t63" for n, w in val])
    files[f"{base}/test/images/test_0.JPEG"] = jpeg(9, (64, 64))
    return {"tiny-imagenet-200.zip": files}, sorted(wnids), {"train": 6, "test": 4}


# dataset -> (builder, {module attribute holding a Remote: archive file name it serves})
BUILDERS: dict[str, tuple[Callable, object, dict[str, str]]] = {
    "caltech256": (build_caltech256, caltech, {"CALTECH256_REMOTE": "256_ObjectCategories.tar"}),
    "caltech101": (build_caltech101, caltech, {"CALTECH101_REMOTE": "101_ObjectCategories.tar.gz"}),
    "cub200": (build_cub200, fgvc, {"CUB_REMOTE": "CUB_200_2011.tgz"}),
    "stanford_dogs": (build_stanford_dogs, fgvc, {"DOGS_IMAGES": "images.tar", "DOGS_LISTS": "lists.tar"}),
    "fgvc_aircraft": (build_fgvc_aircraft, fgvc, {"AIRCRAFT_REMOTE": "fgvc-aircraft-2013b.tar.gz"}),
    "flowers102": (build_flowers102, vgg, {"FLOWERS_IMAGES": "102flowers.tgz", "FLOWERS_LABELS": "imagelabels.mat",
                                           "FLOWERS_SETID": "setid.mat"}),
    "oxford_pets": (build_oxford_pets, vgg, {"PETS_IMAGES": "images.tar.gz",
                                             "PETS_ANNOTATIONS": "annotations.tar.gz"}),
    "dtd": (build_dtd, vgg, {"DTD_REMOTE": "dtd-r1.0.1.tar.gz"}),
    "food101": (build_food101, food101, {"FOOD101_REMOTE": "food-101.tar.gz"}),
    "tinyimagenet": (build_tinyimagenet, imagenet, {"TINY_REMOTE": "tiny-imagenet-200.zip"}),
}


def serve(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], dict[str, int]]:
    """Write ``name``'s fixture archives and point its remotes at them (file URLs, their real md5s)."""
    build, module, attrs = BUILDERS[name]
    archives, classes, sizes = build()
    remotes = {archive: pack(files, tmp_path / "server" / archive) for archive, files in archives.items()}
    for attr, archive in attrs.items():
        monkeypatch.setattr(module, attr, remotes[archive])
    if name == "caltech256":
        monkeypatch.setattr(caltech, "ROLI_SPLITS", {s: remotes[f"{s}.json"] for s in ("train", "val", "test")})
    return classes, sizes


def red_labels(x: torch.Tensor) -> list[int]:
    """The labels the fixture JPEGs encode in their red channel."""
    return [round(v / 10) for v in x[:, 0].float().mean((1, 2)).tolist()]


# ---------------------------------------------------------------------------------------------------------------
# download, unpack, official split: every dataset through load_dataset
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_downloads_unpacks_and_loads_the_official_splits(name, tmp_path, monkeypatch):
    classes, sizes = serve(name, tmp_path, monkeypatch)
    root = tmp_path / "root"
    root.mkdir()
    for split, size in sizes.items():
        ds = load_dataset(name, split if split != "train" or "val" in sizes else "train_full", root=root,
                          image_size=8)
        assert ds.classes == classes and ds.name == name
        assert len(ds) == size and ds.x.shape[1:] == (3, 8, 8), split
        assert red_labels(ds.x) == ds.y.tolist(), f"{split}: an image decoded under another label than its list's"
    if "val" not in sizes:  # validation is carved from the official training split, never from test
        train, val = (load_dataset(name, s, root=root, image_size=8, val_fraction=0.3) for s in ("train", "val"))
        assert len(train) + len(val) == sizes["train"] and len(val) > 0
    assert not any(p.name.startswith(".download-") for p in root.rglob("*")), "the staging directory is removed"
    monkeypatch.setattr(BUILDERS[name][1], next(iter(BUILDERS[name][2])), Remote("http://127.0.0.1:9/x.tar", "0"))
    assert len(load_dataset(name, "test", root=root, image_size=8)) == sizes["test"], "an unpacked copy is reused"


def test_a_download_whose_checksum_differs_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    serve("dtd", tmp_path, monkeypatch)
    monkeypatch.setattr(vgg, "DTD_REMOTE", Remote(vgg.DTD_REMOTE.url, "0" * 32))
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(UserError, match="md5 .* != expected 0{32}") as err:
        load_dataset("dtd", root=root, image_size=8)
    assert "dtd-r1.0.1.tar.gz" in str(err.value) and "\n" not in str(err.value)
    assert [p for p in root.rglob("*") if not p.is_dir()] == [], "nothing of the refused archive is kept"


def test_a_remote_without_published_checksum_is_used_with_a_warning(tmp_path, monkeypatch, caplog):
    serve("stanford_dogs", tmp_path, monkeypatch)
    for attr in ("DOGS_IMAGES", "DOGS_LISTS"):
        monkeypatch.setattr(fgvc, attr, Remote(getattr(fgvc, attr).url, None))
    (tmp_path / "root").mkdir()
    with caplog.at_level(logging.WARNING):
        assert len(load_dataset("stanford_dogs", "test", root=tmp_path / "root", image_size=8)) == 3
    assert "no published checksum" in caplog.text


def test_a_zip_member_escaping_the_data_root_is_refused(tmp_path, monkeypatch):
    remote = pack({"tiny-imagenet-200/wnids.txt": text(["n1"]), "../evil": b"x"}, tmp_path / "tiny-imagenet-200.zip")
    monkeypatch.setattr(imagenet, "TINY_REMOTE", remote)
    root = tmp_path / "deep" / "root"
    root.mkdir(parents=True)
    with pytest.raises(UserError, match="outside"):
        load_dataset("tinyimagenet", root=root)
    assert [p for p in (tmp_path / "deep").rglob("*") if not p.is_dir()] == []


def test_missing_without_download_says_what_to_fetch(tmp_path):
    with pytest.raises(UserError) as err:
        load_dataset("cub200", root=tmp_path, download=False)
    message = str(err.value)
    assert "CUB_200_2011.tgz" in message and str(tmp_path / "cub200") in message and "\n" not in message


def test_a_list_naming_a_missing_image_is_one_user_error(tmp_path, monkeypatch):
    serve("food101", tmp_path, monkeypatch)
    load_dataset("food101", "test", root=tmp_path, image_size=8)
    (tmp_path / "food101" / "food-101" / "images" / "apple_pie" / "1003.jpg").unlink()
    with pytest.raises(UserError, match=r"1003\.jpg .*cannot be read"):
        load_dataset("food101", "test", root=tmp_path, image_size=8)


def test_caltech101_split_is_fixed_and_leaves_out_background(tmp_path, monkeypatch):
    serve("caltech101", tmp_path, monkeypatch)
    train = load_dataset("caltech101", "train_full", root=tmp_path, image_size=8)
    assert torch.bincount(train.y).tolist() == [30, 30] and 9 not in red_labels(train.x)
    again = load_dataset("caltech101", "train_full", root=tmp_path, image_size=8, cache=False)
    assert torch.equal(train.x, again.x)


def test_stl10_binaries_are_column_major(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8) for s, n in (("train", 3), ("test", 2))}
    labels = {"train": [1, 10, 4], "test": [2, 2]}
    files = {"stl10_binary/class_names.txt": text([f"c{i}" for i in range(10)]),
             "stl10_binary/unlabeled_X.bin": b""}
    for s in images:
        files[f"stl10_binary/{s}_X.bin"] = images[s].transpose(0, 1, 3, 2).tobytes()  # as published
        files[f"stl10_binary/{s}_y.bin"] = bytes(labels[s])
    monkeypatch.setattr(stl10, "STL10_REMOTE", pack(files, tmp_path / "stl10_binary.tar.gz"))
    (tmp_path / "root").mkdir()
    for s in images:
        ds = load_dataset("stl10", s if s == "test" else "train_full", root=tmp_path / "root")
        assert torch.equal(ds.x, torch.from_numpy(images[s])) and ds.y.tolist() == [v - 1 for v in labels[s]]
        assert ds.classes[0] == "c0"


# ---------------------------------------------------------------------------------------------------------------
# ImageNet: a local ILSVRC-2012 folder, never downloaded
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flat_val", [False, True])
def test_imagenet_from_a_local_ilsvrc_folder(tmp_path, monkeypatch, flat_val):
    wnids = write_imagenet(tmp_path / "ilsvrc", flat_val)
    monkeypatch.setenv("ROBUSTFT_IMAGENET", str(tmp_path / "ilsvrc"))
    train = load_dataset("imagenet", "train_full", image_size=8)
    test = load_dataset("imagenet", "test", image_size=8)
    assert train.classes == wnids and len(train) == 9 and red_labels(train.x) == train.y.tolist()
    expected = [2, 0, 1, 1, 0]  # by image name (flat, devkit labels), or class by class (val/<wnid>/)
    assert test.y.tolist() == (expected if flat_val else sorted(expected)) and red_labels(test.x) == test.y.tolist()


def test_imagenet_under_the_data_root_and_its_missing_message(tmp_path, monkeypatch):
    monkeypatch.delenv("ROBUSTFT_IMAGENET", raising=False)
    with pytest.raises(UserError, match=r"not downloaded automatically.*ROBUSTFT_IMAGENET") as err:
        load_dataset("imagenet", root=tmp_path)
    assert str(tmp_path / "imagenet") in str(err.value) and "\n" not in str(err.value)
    write_imagenet(tmp_path / "imagenet", flat_val=False)
    assert len(load_dataset("imagenet", "test", root=tmp_path, image_size=8)) == 5


def test_imagenet_flat_val_without_devkit_says_how_to_fix(tmp_path):
    write_imagenet(tmp_path / "imagenet", flat_val=True)
    (tmp_path / "imagenet" / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").unlink()
    with pytest.raises(UserError, match="ILSVRC2012_devkit_t12.tar.gz"):
        load_dataset("imagenet", root=tmp_path, image_size=8)


def test_pretrain_data_imagenet_trains_from_the_local_folder(tmp_path, monkeypatch, capsys):
    write_imagenet(tmp_path / "ilsvrc", flat_val=False)
    monkeypatch.setenv("ROBUSTFT_IMAGENET", str(tmp_path / "ilsvrc"))
    argv = ["pretrain", "--data", "imagenet", "--arch", "cifar_resnet20", "--out-dir", str(tmp_path / "runs"),
            "--name", "in", "--epochs", "1", "--set", "model.options.width=4", "--set", "data.image_size=8",
            "--set", "data.batch_size=4", "--set", "attack.steps=1", "--set", "eval.val_steps=1",
            "--set", "eval.test_steps=1", "--set", "data.val_fraction=0.34"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "data: 6 train / 3 val images of 8x8 pixels (data.image_size), 3 classes" in capsys.readouterr().out
    assert (tmp_path / "runs" / "in" / "results.json").is_file()


def test_pretrain_data_imagenet_streams_from_the_disk_store(tmp_path, monkeypatch, capsys):
    """The ImageNet path at scale: images kept at their aspect ratio in a memory-mapped store on disk, trained on
    random-resized crops and evaluated on centre crops, the same results as the in-memory store."""
    write_imagenet(tmp_path / "ilsvrc", flat_val=False)
    monkeypatch.setenv("ROBUSTFT_IMAGENET", str(tmp_path / "ilsvrc"))
    monkeypatch.setenv("ROBUSTFT_CACHE", str(tmp_path / "cache"))
    results = {}
    for storage in ("disk", "memory"):
        argv = ["pretrain", "--data", "imagenet", "--arch", "cifar_resnet20", "--out-dir", str(tmp_path / "runs"),
                "--name", storage, "--epochs", "1", "--set", "model.options.width=4", "--set", "data.image_size=8",
                "--set", "data.storage_size=10", "--set", "data.augment=random_resized_crop",
                "--set", f"data.storage={storage}", "--set", "data.batch_size=4", "--set", "attack.steps=1",
                "--set", "eval.val_steps=1", "--set", "eval.test_steps=1", "--set", "data.val_fraction=0.34",
                "--set", "train.amp=off"]
        assert main(argv) == 0, capsys.readouterr().err
        results[storage] = json.loads((tmp_path / "runs" / storage / "results.json").read_text())
    assert list((tmp_path / "cache" / "stores").iterdir()), "the disk run wrote its store"
    def numbers(record: dict) -> dict:
        """The record without its timings."""
        timed = ("images_per_s", "timing", "time", "seconds", "wall")
        return {k: numbers(v) if isinstance(v, dict) else v for k, v in record.items()
                if not any(t in k for t in timed)}

    assert numbers(results["disk"]["test"]) == numbers(results["memory"]["test"])
    assert (tmp_path / "runs/disk/test_samples.json").read_bytes() == (tmp_path / "runs/memory/test_samples.json"
                                                                       ).read_bytes()


# ---------------------------------------------------------------------------------------------------------------
# corruption benchmarks by name
# ---------------------------------------------------------------------------------------------------------------
def serve_cifar10_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fog: np.ndarray) -> None:
    """CIFAR-10-C.tar holding ``fog.npy`` (5 severities stacked) and ``labels.npy``, served as ``cifar10_c``."""
    files = {}
    for name, array in (("CIFAR-10-C/fog.npy", fog), ("CIFAR-10-C/labels.npy", np.arange(len(fog)) % 10)):
        out = io.BytesIO()
        np.save(out, array)
        files[name] = out.getvalue()
    card = CORRUPTIONS["cifar10_c"]
    monkeypatch.setitem(CORRUPTIONS, "cifar10_c", type(card)(**{**card.__dict__,
                                                                "remote": pack(files, tmp_path / "CIFAR-10-C.tar")}))
    monkeypatch.chdir(tmp_path)  # where no directory is called cifar10_c


def test_cifar10_c_by_name_is_fetched_into_the_data_root(tmp_path, monkeypatch):
    images = np.arange(5 * 4 * 32 * 32 * 3, dtype=np.int64).astype(np.uint8).reshape(20, 32, 32, 3)
    serve_cifar10_c(tmp_path, monkeypatch, images)
    ds = load_corrupted("cifar10_c", "fog", 2)
    assert torch.equal(ds.x, torch.from_numpy(images[4:8]).permute(0, 3, 1, 2))
    assert (default_data_root() / "CIFAR-10-C" / "labels.npy").is_file()


def test_evaluate_corruption_dir_by_name(tmp_path, monkeypatch, npz_data, ckpt, capsys):
    serve_cifar10_c(tmp_path, monkeypatch, np.zeros((10, 32, 32, 3), np.uint8))
    argv = ["evaluate", "--arch", "cifar_resnet20", "--checkpoint", str(ckpt), "--data", str(npz_data),
            "--corruptions", "all", "--severity", "3", "--corruption-dir", "cifar10_c", "--json", "r.json"]
    assert main(argv) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "r.json").read_text())["corruptions"]
    assert list(record["accuracy"]) == ["fog"] and record["source"] == "cifar10_c"


def test_a_corruption_set_as_data_points_to_corruption_dir(capsys):
    assert main(["evaluate", "--data", "cifar10_c", "--arch", "cifar_resnet20"]) == 2
    assert "--corruption-dir cifar10_c" in error_line(capsys.readouterr().err)


def test_corruption_cards_name_the_published_archives():
    assert {c.name for c in CORRUPTIONS.values()} == {"cifar10_c", "cifar100_c", "tinyimagenet_c"}
    assert all(c.remote.url.startswith("https://zenodo.org/records/") for c in CORRUPTIONS.values())


def test_every_name_of_the_issue_is_in_the_catalog():
    wanted = {"caltech256", "cub200", "stanford_dogs", "dtd", "stl10", "tinyimagenet", "flowers102", "oxford_pets",
              "fgvc_aircraft", "caltech101", "food101", "imagenet", "cifar10", "cifar100", "svhn"}
    assert set(CATALOG) == wanted
    assert set(CATALOG) - {"imagenet", "stl10", "cifar10", "cifar100", "svhn"} == set(BUILDERS), "each has a fixture"
