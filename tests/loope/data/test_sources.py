"""Datasets read from disk (CIFAR pickles, ImageFolder trees), digits, and their splits."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from loope.data import load_dataset
from loope.data.splits import Split, random_parts
from loope.spec import DatasetSpec

# --- CIFAR ----------------------------------------------------------------------------------


def write_cifar10(root: Path, per_batch: int = 6) -> np.ndarray:
    """Five training batches and a test batch; image k is filled with the value k."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    values = np.arange(per_batch * len(names), dtype=np.uint8)
    for index, name in enumerate(names):
        chunk = values[index * per_batch : (index + 1) * per_batch]
        batch = {
            b"data": np.repeat(chunk[:, None], 3072, axis=1),
            b"labels": [int(v) % 10 for v in chunk],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    return values


def test_cifar10_official_split_keeps_the_test_batch(tmp_path: Path):
    values = write_cifar10(tmp_path)
    spec = DatasetSpec(
        name="cifar10", path=str(tmp_path), split="official", fractions=(0.8, 0.2, 0)
    )
    bundle = load_dataset(spec)

    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (24, 6, 6)
    assert bundle.num_outputs == 10 and bundle.img_size == 32 and bundle.in_chans == 3
    assert bundle.test.images.shape == (6, 3, 32, 32) and bundle.test.images.dtype == torch.uint8
    assert bundle.test.images[:, 0, 0, 0].tolist() == values[30:].tolist()
    assert bundle.test.targets.tolist() == [int(v) % 10 for v in values[30:]]
    seen = torch.cat([bundle.train.images[:, 0, 0, 0], bundle.val.images[:, 0, 0, 0]])
    assert sorted(seen.tolist()) == values[:30].tolist()
    assert bundle.split.startswith("official")


def test_cifar10_random_split_uses_all_images_80_10_10(tmp_path: Path):
    write_cifar10(tmp_path, per_batch=10)  # 60 images
    bundle = load_dataset(DatasetSpec(name="cifar10", path=str(tmp_path / "cifar-10-batches-py")))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (48, 6, 6)
    every = torch.cat([s.images[:, 0, 0, 0] for s in (bundle.train, bundle.val, bundle.test)])
    assert sorted(every.tolist()) == list(range(60))
    assert bundle.split == "random 80/10/10 seed 0"


def test_cifar100_reads_fine_labels(tmp_path: Path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 20), ("test", 5)):
        batch = {b"data": np.zeros((n, 3072), np.uint8), b"fine_labels": list(range(80, 80 + n))}
        (folder / name).write_bytes(pickle.dumps(batch | {b"coarse_labels": [0] * n}))
    bundle = load_dataset(DatasetSpec(name="cifar100", path=str(tmp_path), split="official"))
    assert bundle.num_outputs == 100 and bundle.test.targets.tolist() == list(range(80, 85))


def test_cifar_missing_files_name_the_path_and_layout(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}.*data_batch_1.*test_batch"):
        load_dataset(DatasetSpec(name="cifar10", path=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="does not exist.*cifar-100-python/"):
        load_dataset(DatasetSpec(name="cifar100", path=str(tmp_path / "nowhere")))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a pickle at all", "not a CIFAR pickle"),
        (pickle.dumps([1, 2, 3]), "holds list"),
        (pickle.dumps({b"labels": [0]}), "no 'data' entry"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), r"\(n, 3072\)"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), r"\[0, 10\)"),
    ],
)
def test_malformed_cifar_batches_name_the_file(tmp_path: Path, content: bytes, message: str):
    write_cifar10(tmp_path)
    broken = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    broken.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        load_dataset(DatasetSpec(name="cifar10", path=str(tmp_path)))
    assert str(broken) in str(error.value) and "uint8" in str(error.value)


# --- ImageFolder ----------------------------------------------------------------------------


def write_tree(root: Path, classes: dict[str, int], color_of: dict[str, int]) -> None:
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            size = (10 + 3 * index, 7 + index)  # varied sizes, resized on reading
            Image.new("RGB", size, (color_of[name], 0, 0)).save(root / name / f"{index}.png")


def test_image_folder_flat_tree_is_split_randomly(tmp_path: Path):
    write_tree(tmp_path, {"cat": 10, "dog": 10}, {"cat": 200, "dog": 50})
    (tmp_path / "cat" / "notes.txt").write_text("not an image")  # ignored by suffix
    spec = DatasetSpec(name="image-folder", path=str(tmp_path), image_size=16)
    bundle = load_dataset(spec)

    assert bundle.classes == ["cat", "dog"] and bundle.num_outputs == 2
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (16, 2, 2)
    assert bundle.train.images.shape[1:] == (3, 16, 16)
    for part in (bundle.train, bundle.val, bundle.test):
        red = part.images[:, 0, 8, 8].tolist()
        assert red == [200 if t == 0 else 50 for t in part.targets.tolist()]


def test_image_folder_with_train_and_test_folders_uses_the_official_split(tmp_path: Path):
    write_tree(tmp_path / "train", {"a": 5, "b": 5}, {"a": 10, "b": 20})
    write_tree(tmp_path / "val", {"a": 2, "b": 3}, {"a": 10, "b": 20})
    spec = DatasetSpec(
        name="image-folder", path=str(tmp_path), image_size=8, split="official",
        fractions=(0.8, 0.2, 0.0),
    )  # fmt: skip
    bundle = load_dataset(spec)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (8, 2, 5)
    assert bundle.test.targets.tolist() == [0, 0, 1, 1, 1]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda root: None, "not a folder"),
        (lambda root: write_tree(root, {"only": 2}, {"only": 1}), "found 1 class folders"),
        (lambda root: (root / "a").mkdir(parents=True) or (root / "b").mkdir(), "no images"),
        (
            lambda root: (
                write_tree(root, {"a": 1, "b": 1}, {"a": 1, "b": 1})
                or (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
            ),
            "broken.jpg: not a readable image",
        ),
        (
            lambda root: (
                write_tree(root / "train", {"a": 1, "b": 1}, {"a": 1, "b": 1})
                or write_tree(root / "test", {"a": 1, "c": 1}, {"a": 1, "c": 1})
            ),
            r"classes differ: \['b', 'c'\]",
        ),
    ],
)
def test_bad_image_folders_are_named(tmp_path: Path, build: Any, message: str):
    root = tmp_path / "data"
    build(root)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_dataset(DatasetSpec(name="image-folder", path=str(root), image_size=8))


def test_official_split_needs_a_test_folder(tmp_path: Path):
    write_tree(tmp_path, {"a": 2, "b": 2}, {"a": 1, "b": 2})
    spec = DatasetSpec(name="image-folder", path=str(tmp_path), image_size=8, split="official")
    with pytest.raises(ValueError, match="dataset.split.*train and .*test"):
        load_dataset(spec)


# --- digits and splits ----------------------------------------------------------------------


def test_digits_is_the_bundled_set_split_80_10_10_by_seed():
    first = load_dataset(DatasetSpec(name="digits", seed=1))
    again = load_dataset(DatasetSpec(name="digits", seed=1))
    other = load_dataset(DatasetSpec(name="digits", seed=2))
    assert (len(first.train), len(first.val), len(first.test)) == (1438, 180, 179)
    assert first.train.images.shape[1:] == (1, 8, 8) and first.natural_patch == 2
    assert float(first.train.images.max()) == 1.0 and first.num_outputs == 10
    assert torch.equal(first.test.images, again.test.images)
    assert not torch.equal(first.test.images, other.test.images)


def test_digits_can_be_upscaled():
    bundle = load_dataset(DatasetSpec(name="digits", image_size=32))
    assert bundle.train.images.shape[1:] == (1, 32, 32) and bundle.natural_patch == 8
    images, _ = bundle.train.take(slice(0, 4))
    assert images.dtype == torch.float32 and images.min() >= 0 and images.max() <= 1


def test_random_parts_partition_the_indices():
    parts = random_parts(101, (0.8, 0.1, 0.1), seed=5)
    assert [len(p) for p in parts] == [81, 10, 10]
    assert sorted(torch.cat(parts).tolist()) == list(range(101))


def test_split_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="3 images but 2 targets"):
        Split(torch.zeros(3, 1, 2, 2), torch.zeros(2))


def test_three_cell_bundle_carries_label_statistics_and_every_choice():
    spec = DatasetSpec(
        name="three-cell", grid=6, cell=2, n=200, seed=4, max_sq_len=8,
        vector_sum_rule="either", reject_collinear=False, fractions=(0.5, 0.25, 0.25),
    )  # fmt: skip
    bundle = load_dataset(spec)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (100, 50, 50)
    assert bundle.img_size == 12 and bundle.natural_patch == 2
    assert bundle.baseline is not None and bundle.positive_rates is not None
    assert set(bundle.baseline) >= {"bit0", "distance", "average"}
    assert set(bundle.positive_rates) >= {"bit5", "vector_sum"}
    majority = np.maximum(bundle.positive_rates["bit2"], 100 - bundle.positive_rates["bit2"])
    assert bundle.baseline["bit2"] == pytest.approx(majority)


# --- spec validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "three-cell", "augment": ["hflip"]}, "dataset.augment: hflip move cells"),
        ({"name": "three-cell", "augment": ["brightness", "rotate", "elastic"]}, "rotate, elastic"),
        ({"name": "three-cell", "split": "official"}, "dataset.split"),
        ({"name": "three-cell", "image_size": 64}, "dataset.image_size"),
        ({"name": "cifar10"}, "dataset.path"),
        ({"name": "digits", "path": "/data"}, "dataset.path"),
        ({"name": "image-folder", "path": "/data"}, "dataset.image_size"),
        ({"name": "digits", "grid": 8}, "dataset.grid"),
        ({"name": "digits", "fractions": [0.5, 0.5, 0.5]}, "dataset.fractions"),
        ({"name": "digits", "augment": ["mixup"]}, "augment"),
        ({"name": "imagenet"}, "name"),
    ],
)
def test_impossible_datasets_are_refused_naming_the_field(body: dict[str, Any], message: str):
    with pytest.raises(ValidationError, match=message):
        DatasetSpec.model_validate(body)


def test_brightness_is_allowed_on_three_cell():
    assert DatasetSpec(name="three-cell", augment=("brightness",)).augment == ("brightness",)
