"""DataModules: the real readers on tiny real-format copies, the split, the transforms and the error messages."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from conftest import CIFAR_CLASSES, write_cifar_batches, write_image_folder, write_mnist
from lightning.pytorch.plugins.precision import Precision

from mnist_cifar.data import CIFAR10DataModule, MNISTDataModule, augment, sources
from mnist_cifar.errors import ConfigError, DataCorruptError, DataNotFoundError


def test_mnist_reader_returns_exact_pixels_and_labels(tmp_path: Path) -> None:
    written = write_mnist(tmp_path)
    dm = MNISTDataModule(data_dir=str(tmp_path), val_size=0)
    dm.setup("test")
    assert torch.equal(dm.test_set.images, torch.from_numpy(written["test"][0]))
    assert torch.equal(dm.test_set.labels, torch.from_numpy(written["test"][1]).long())


def test_cifar_batches_reader_returns_exact_pixels_and_labels(tmp_path: Path) -> None:
    written = write_cifar_batches(tmp_path)
    dm = CIFAR10DataModule(data_dir=str(tmp_path))
    assert torch.equal(dm._load("train")[0], torch.from_numpy(written["train"][0]))
    assert torch.equal(dm._load("test")[1], torch.from_numpy(written["test"][1]).long())


def test_image_folder_is_decoded_exactly_then_served_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = write_image_folder(tmp_path / "folder")
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "folder"), cache_dir=str(tmp_path / "cache"))
    images, labels = dm._load("train")
    order = torch.from_numpy(written["train"][1]).argsort(stable=True)  # files are read class by class
    assert torch.equal(images, torch.from_numpy(written["train"][0])[order])
    assert torch.equal(labels, torch.from_numpy(written["train"][1]).long()[order])
    assert len(list((tmp_path / "cache").glob("imagefolder-train-*.pt"))) == 1

    monkeypatch.setattr(sources, "decode_image", lambda *a, **k: pytest.fail("decoded again despite the cache"))
    cached_images, _ = dm._load("train")
    assert torch.equal(cached_images, images)


def test_image_folder_cache_is_invalidated_when_a_file_changes(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "folder")
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "folder"), cache_dir=str(tmp_path / "cache"))
    dm._load("test")
    changed = tmp_path / "folder" / "test" / "airplane" / "0000.png"
    from torchvision.io import write_png

    write_png(torch.full((3, 32, 32), 7, dtype=torch.uint8), str(changed))
    images, _ = dm._load("test")
    assert (images[0] == 7).all()
    assert len(list((tmp_path / "cache").glob("imagefolder-test-*.pt"))) == 2


def test_split_is_disjoint_complete_and_seeded(mnist_dir: Path) -> None:
    def split(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        dm = MNISTDataModule(data_dir=str(mnist_dir), val_size=50, split_seed=seed)
        dm.setup("fit")
        return dm.train_set.images.flatten(1), dm.val_set.images.flatten(1)

    train, val = split(1)
    assert len(train) == 150 and len(val) == 50
    # Every tiny MNIST image differs (noise), so rows identify images.
    all_rows = {tuple(r.tolist()) for r in torch.cat([train, val])}
    assert len(all_rows) == 200
    assert not {tuple(r.tolist()) for r in train} & {tuple(r.tolist()) for r in val}
    assert torch.equal(split(1)[1], val)
    assert not torch.equal(split(2)[1], val)


def test_test_set_is_not_read_for_fit(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dm = MNISTDataModule(data_dir=str(mnist_dir), val_size=50)
    read = []
    original = dm.read_split
    monkeypatch.setattr(dm, "read_split", lambda source, split: read.append(split) or original(source, split))
    dm.setup("fit")
    assert read == ["train"] and dm.test_set is None


def test_random_crop_takes_a_window_of_the_zero_padded_image() -> None:
    torch.manual_seed(0)
    images = torch.randint(1, 256, (400, 3, 8, 8), dtype=torch.uint8)
    cropped = augment.random_crop(images, padding=2)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    offsets = set()
    for image, out in zip(padded, cropped):
        matches = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(image[:, dy : dy + 8, dx : dx + 8], out)]
        assert matches, "a crop is not a window of the padded image"
        offsets.add(matches[0])
    assert len(offsets) == 25  # every offset occurs
    assert torch.equal(augment.random_crop(images, padding=0), images)


def test_horizontal_flip_flips_about_half_and_keeps_the_rest() -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (1000, 1, 4, 4), dtype=torch.uint8)
    out = augment.random_horizontal_flip(images)
    flipped = (out == images.flip(3)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert (flipped | kept).all()
    assert 400 < flipped.sum() < 600


class _FakeTrainer:
    def __init__(self, training: bool) -> None:
        self.training = training
        self.precision_plugin = Precision()


def test_only_training_batches_are_augmented(cifar_dir: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(cifar_dir), val_size=50)
    dm.setup("fit")
    images, labels = dm.val_set.images[:32], dm.val_set.labels[:32]
    plain = dm.preprocess(images, train=False)
    torch.manual_seed(0)
    dm.trainer = _FakeTrainer(training=False)
    assert torch.equal(dm.on_after_batch_transfer((images, labels), 0)[0], plain)
    dm.trainer = _FakeTrainer(training=True)
    assert not torch.equal(dm.on_after_batch_transfer((images, labels), 0)[0], plain)
    dm.hparams.augment = False
    assert torch.equal(dm.on_after_batch_transfer((images, labels), 0)[0], plain)


def test_normalization_matches_torchvision_totensor_normalize(cifar_dir: Path) -> None:
    from torchvision.transforms import v2

    dm = CIFAR10DataModule(data_dir=str(cifar_dir))
    images = dm._load("test")[0][:8]
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(dm.mean, dm.std)])(images)
    torch.testing.assert_close(dm.preprocess(images), reference)


@pytest.mark.parametrize("training", [True, False])
def test_pixel_permutation_is_one_fixed_permutation_for_every_split(mnist_dir: Path, training: bool) -> None:
    dm = MNISTDataModule(data_dir=str(mnist_dir), val_size=50, permute_pixels=True, permutation_seed=3)
    plain = MNISTDataModule(data_dir=str(mnist_dir), val_size=50)
    dm.setup()
    plain.setup()
    assert torch.equal(dm.permutation, MNISTDataModule(permute_pixels=True, permutation_seed=3).permutation)
    assert not torch.equal(dm.permutation, torch.arange(28 * 28))
    dm.trainer = _FakeTrainer(training)
    for split in (dm.train_set, dm.val_set, dm.test_set):
        batch = (split.images[:16], split.labels[:16])
        permuted = dm.on_after_batch_transfer(batch, 0)[0]
        expected = plain.preprocess(split.images[:16]).flatten(2)[:, :, dm.permutation].view_as(permuted)
        assert torch.equal(permuted, expected)


def test_grayscale_cifar_has_one_channel(cifar_dir: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(cifar_dir), val_size=50, grayscale=True)
    dm.setup("fit")
    assert dm.input_shape == (1, 32, 32)
    images, _ = next(iter(dm.train_dataloader()))
    assert dm.preprocess(images, train=True).shape[1:] == (1, 32, 32)


def test_loaders_yield_every_training_image_once_per_epoch(mnist_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(mnist_dir), val_size=50, batch_size=32)
    dm.setup("fit")
    labels = torch.cat([labels for _, labels in dm.train_dataloader()])
    assert len(labels) == 150
    assert torch.equal(labels.sort().values, dm.train_set.labels.sort().values)


def test_data_dir_comes_from_the_environment(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_CIFAR_DATA", str(mnist_dir))
    dm = MNISTDataModule(download=False)
    dm.prepare_data()
    assert dm.find_source() == mnist_dir / "MNIST" / "raw"


# -- error messages ------------------------------------------------------------------------------
def test_missing_data_without_download_names_folder_layouts_and_fix(tmp_path: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataNotFoundError) as error:
        dm.prepare_data()
    message = str(error.value)
    for expected in (str((tmp_path / "nowhere").resolve()), "cifar-10-batches-py", "train/<class>", "--data.data_dir",
                     "MNIST_CIFAR_DATA"):
        assert expected in message


def test_failed_download_is_reported_with_its_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(MNISTDataModule, "download_source", offline)
    with pytest.raises(DataNotFoundError, match="downloading it failed.*Network is unreachable"):
        MNISTDataModule(data_dir=str(tmp_path)).prepare_data()


def test_image_folder_with_missing_and_unknown_classes_names_them(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    (tmp_path / "train" / "frog").rename(tmp_path / "train" / "frogs")
    with pytest.raises(DataCorruptError, match=r"Missing: frog\. Not a class of this data set: frogs"):
        CIFAR10DataModule(data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))._load("train")


def test_unreadable_image_files_are_named(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    bad = tmp_path / "test" / "cat" / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataCorruptError, match="broken.png"):
        CIFAR10DataModule(data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))._load("test")


def test_corrupt_idx_file_is_named(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataCorruptError, match="t10k-images-idx3-ubyte"):
        MNISTDataModule(data_dir=str(tmp_path))._load("test")


def test_corrupt_cifar_batch_is_named(tmp_path: Path) -> None:
    write_cifar_batches(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"truncated")
    with pytest.raises(DataCorruptError, match="data_batch_3"):
        CIFAR10DataModule(data_dir=str(tmp_path))._load("train")


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"val_size": -1}, {"crop_padding": -2}])
def test_bad_values_are_refused_by_name(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="data."):
        MNISTDataModule(**kwargs)


def test_val_size_larger_than_the_training_set_is_refused(mnist_dir: Path) -> None:
    with pytest.raises(ConfigError, match="val_size=500"):
        MNISTDataModule(data_dir=str(mnist_dir), val_size=500).setup("fit")


def test_class_names_and_shapes() -> None:
    assert CIFAR10DataModule.classes == CIFAR_CLASSES
    assert MNISTDataModule().input_shape == (1, 28, 28) and CIFAR10DataModule().input_shape == (3, 32, 32)


def test_predict_folder_without_any_readable_image_names_the_files(tmp_path: Path) -> None:
    from mnist_cifar.data.user_images import read_user_images

    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataNotFoundError, match="None of the 1 file.*notes.txt"):
        read_user_images(tmp_path, (1, 28, 28))


def test_unwritable_cache_warns_and_still_loads(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "folder", n_train=20, n_test=10)
    blocker = tmp_path / "cache_is_a_file"
    blocker.write_text("not a folder")
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "folder"), cache_dir=str(blocker / "sub"))
    with pytest.warns(UserWarning, match="decoded-image cache"):
        images, _ = dm._load("test")
    assert images.shape == (10, 3, 32, 32)


def test_a_flipped_byte_in_the_image_cache_is_found_and_rebuilt(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "folder")
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "folder"), cache_dir=str(tmp_path / "cache"))
    images, labels = dm._load("train")
    (cache,) = (tmp_path / "cache").glob("imagefolder-train-*.pt")
    data = bytearray(cache.read_bytes())
    offset = bytes(data).find(images.numpy().tobytes()[:64])  # inside the stored pixels
    assert offset > 0
    data[offset + 5] ^= 0x01
    cache.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="decoded-image cache .* is damaged"):
        reloaded, relabelled = dm._load("train")
    assert torch.equal(reloaded, images) and torch.equal(relabelled, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten whole: no warning the next time
        assert torch.equal(dm._load("train")[0], images)


def test_a_class_missing_from_the_test_split_stops_fit_before_training(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    for file in (tmp_path / "test" / "ship").iterdir():
        file.unlink()
    (tmp_path / "test" / "ship").rmdir()
    dm = CIFAR10DataModule(data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"), val_size=10)
    with pytest.raises(DataCorruptError, match=r"test must hold one sub-folder per class.*Missing: ship"):
        dm.setup("fit")
    assert not (tmp_path / "c").exists()  # nothing was decoded: refused before the training split was read
