"""The shared base of the DataModules: a data set that fits in memory as uint8 tensors.

Subclasses describe their data set (class names, image shape, mean/std, accepted on-disk layouts)
and how to read a split; this base does the seeded train/val split, the loaders and the batched
transforms. Transforms run in `on_after_batch_transfer`, after the batch reached the training
device, so the same code augments on the CPU today and on the GPU later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2.functional import rgb_to_grayscale

from mnist_cifar.data import augment, corruptions
from mnist_cifar.data.sampling import DeviceBatches, ShardSampler
from mnist_cifar.data.sources import Split, read_cache, save_cache, tensor_digest
from mnist_cifar.data.user_images import read_user_images
from mnist_cifar.errors import ConfigError, DataNotFoundError
from mnist_cifar.internals import batches_done_in_epoch, shift_batches_done

DATA_ENV = "MNIST_CIFAR_DATA"
CACHE_ENV = "MNIST_CIFAR_CACHE"
MAX_RESIZE = 1024  # a side in pixels: a bigger one (typed, or in a checkpoint) would only exhaust memory


def run_seed() -> int:
    """The run's `seed_everything` value (Lightning exports it as PL_GLOBAL_SEED); 0 when none was set."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class TensorPairDataset(Dataset):
    """Images and labels held as tensors; `__getitems__` lets the DataLoader fetch a batch in one indexing op."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]

    def on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Images and labels on `device`, copied there once."""
        if self.images.device != device:
            self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self.images, self.labels


def keep_batch(batch: Any) -> Any:
    """The collate function for `TensorPairDataset`: its batches are already stacked."""
    return batch


class ImageDataModule(L.LightningDataModule):
    """Split, loaders and batched transforms shared by every in-memory image data set.

    Args:
        data_dir: where the data set lives or is downloaded to; default `$MNIST_CIFAR_DATA` or `data/`.
        batch_size: training batch size.
        eval_batch_size: batch size for validation, test and predict (default: `batch_size`).
        num_workers: DataLoader worker processes; batches are slices of a tensor, so 0 is usually fastest.
        val_size: images held out of the training set, with `split_seed`, to validate on.
        split_seed: seed of the train/val split, independent of the run's seed so runs compare on one split.
        augment: master switch of the training augmentation below; validation and test are never augmented.
        crop_padding: random crop after zero-padding by this many pixels (0 = no crop).
        horizontal_flip: random horizontal flip with probability 0.5.
        grayscale: convert RGB images to one luma channel (ITU-R 601-2, as torchvision does).
        permute_pixels: shuffle pixel positions by one fixed permutation, the same for every image of every split.
        permutation_seed: seed of that permutation.
        download: download the data set into `data_dir` when no copy is found there.
        cache_dir: where decoded image-folder copies are cached; default `$MNIST_CIFAR_CACHE` or `~/.cache/mnist_cifar`.
        predict_path: an image file or a folder of them for `predict`, resized to the data set's shape; without
            it `predict` runs on the test set.
        on_device: keep each split on the training device (uint8, copied once) and slice batches there instead
            of using a DataLoader: the fast path on a GPU; same batches, same results (num_workers is unused).
        normalize: standardize each channel with the data set's mean and std; false only scales pixels to [0, 1]
            (what d2l's `ToTensor` gives its networks).
        resize: upsample every image (bilinear) to `resize` x `resize` pixels after the steps above, as d2l does to
            feed Fashion-MNIST to AlexNet (224) or ResNet (96); the network is sized for it. None: as stored.
        corruption: test on a corrupted copy of the test split (`mnist_cifar.data.corruptions`: CIFAR-10-C's
            algorithms, regenerated and cached), e.g. gaussian_noise; `all` tests the clean split, then every
            corruption at every severity (corruptions.csv in the test's folder). Training never sees it.
        severity: the corruption's severity, 1-5 (CIFAR-10-C's scale).
    """

    name: ClassVar[str]
    classes: ClassVar[tuple[str, ...]]
    image_shape: ClassVar[tuple[int, int, int]]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]
    gray_mean: ClassVar[float]
    gray_std: ClassVar[float]
    layouts: ClassVar[str]

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_size: int = 5000,
        split_seed: int = 42,
        augment: bool = True,
        crop_padding: int = 0,
        horizontal_flip: bool = False,
        grayscale: bool = False,
        permute_pixels: bool = False,
        permutation_seed: int = 0,
        download: bool = True,
        cache_dir: str | None = None,
        predict_path: str | None = None,
        on_device: bool = False,
        normalize: bool = True,
        resize: int | None = None,
        corruption: str | None = None,
        severity: int = 3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, value in [("batch_size", batch_size), ("eval_batch_size", eval_batch_size or 1)]:
            if value < 1:
                raise ConfigError(f"data.{name} must be at least 1, got {value}.")
        if val_size < 0 or crop_padding < 0 or num_workers < 0:
            raise ConfigError("data.val_size, data.crop_padding and data.num_workers must not be negative.")
        known = corruptions.available(self.image_shape[0])
        if corruption not in (None, "all", *known) or severity not in corruptions.SEVERITIES:
            raise ConfigError(f"data.corruption must be one of {', '.join(known)} or all (or null), and data.severity "
                              f"1-5; got {corruption!r} at severity {severity}. (For {self.name}: "
                              f"{'saturate needs RGB images; ' if corruption == 'saturate' else ''}see "
                              f"mnist_cifar/data/corruptions.py for what each does and which are not implemented.)")
        self.active_corruption: tuple[str, int] | None = (corruption, severity) if corruption not in (None, "all") else None
        if resize is not None and not 1 <= resize <= MAX_RESIZE:
            raise ConfigError(f"data.resize must be a side in pixels from 1 to {MAX_RESIZE} (or null for the stored "
                              f"size; d2l's largest is 224), got {resize}.")
        self.data_dir = Path(data_dir or os.environ.get(DATA_ENV) or "data").expanduser()
        self.cache_dir = Path(cache_dir or os.environ.get(CACHE_ENV) or "~/.cache/mnist_cifar").expanduser()
        pixels = self.image_shape[1] * self.image_shape[2]
        generator = torch.Generator().manual_seed(permutation_seed)
        self.permutation: Tensor | None = torch.randperm(pixels, generator=generator) if permute_pixels else None
        self.train_set: TensorPairDataset | None = None
        self.val_set: TensorPairDataset | None = None
        self.test_set: TensorPairDataset | None = None
        self.predict_set: TensorPairDataset | None = None
        self._clean_test: Split | None = None  # the test split as read, kept for its corrupted copies
        self._clean_test_key: str | None = None  # its SHA-256 (prefix), which names those copies in the cache
        self.predict_sources: list[str] = []  # what each predicted image is: a file, or test[i]
        self.predict_has_labels = False
        self.unreadable: list[tuple[str, str]] = []  # predict_path files that are not images, and why
        self._device_constants: dict[torch.device, tuple[Tensor, Tensor, Tensor | None]] = {}
        self._resume_position: dict[str, int] | None = None  # where an interrupted epoch stopped (load_state_dict)
        self._position_offset: tuple[int, int, int] | None = None  # (epoch, batch, images) where this process resumed

    # -- what the data set is ------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape a network sees: `image_shape`, with one channel when `grayscale`, `resize` pixels a side."""
        channels = 1 if self.hparams.grayscale else self.image_shape[0]
        side = self.hparams.get("resize")
        return (channels, side, side) if side else (channels, self.image_shape[1], self.image_shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The mean and std each channel is standardized with (0 and 1 with `normalize: false`)."""
        if not self.hparams.get("normalize", True):
            channels = self.input_shape[0]
            return (0.0,) * channels, (1.0,) * channels
        if self.hparams.grayscale and self.image_shape[0] == 3:
            return (self.gray_mean,), (self.gray_std,)
        return self.mean, self.std

    # -- reading -------------------------------------------------------------------------------
    def find_source(self) -> Any | None:
        """Locate a readable copy under `data_dir`; None when there is none."""
        raise NotImplementedError

    def download_source(self) -> None:
        raise NotImplementedError

    def check_source(self, source: Any) -> None:
        """Check, before training, what `fit` would otherwise find broken only later (e.g. the test split)."""

    def read_split(self, source: Any, split: str) -> Split:
        """Read `split` ("train" or "test") from what `find_source` returned."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        if self._predicting_user_images() or self.find_source() is not None:
            return
        if not self.hparams.download:
            raise self._not_found("download is disabled (data.download: false)")
        try:
            self.download_source()
        except Exception as error:
            raise self._not_found(f"downloading it failed ({type(error).__name__}: {error})") from error
        if self.find_source() is None:
            raise self._not_found("the download finished but left no readable copy")

    def _predicting_user_images(self) -> bool:
        """`predict` on the user's own files needs no copy of the data set itself."""
        return bool(self.hparams.predict_path) and self.trainer is not None and self.trainer.state.fn == "predict"

    def _not_found(self, why: str) -> DataNotFoundError:
        return DataNotFoundError(
            f"No {self.name} data found in {self.data_dir.resolve()}, and {why}. Accepted layouts under that "
            f"folder: {self.layouts}. Point --data.data_dir (or the {DATA_ENV} environment variable) at a "
            f"folder holding one of them, or run once with internet access to download it there."
        )

    def stored_split(self, split: str) -> Split:
        """`split` as the files hold it, before the luma conversion of a grayscale run: what a user of an exported
        file feeds it (`mnist_cifar.export.write`)."""
        source = self.find_source()
        if source is None:
            raise self._not_found("it was not downloaded (prepare_data did not run or download is disabled)")
        return self.read_split(source, split)

    def _load(self, split: str) -> Split:
        images, labels = self.stored_split(split)
        return self._to_input_channels(images), labels

    def _to_input_channels(self, images: Tensor) -> Tensor:
        """One luma channel when `grayscale` is on and the images are RGB; otherwise unchanged."""
        return rgb_to_grayscale(images) if self.hparams.grayscale and images.shape[1] == 3 else images

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            source = self.find_source() if stage == "fit" else None
            if source is not None:
                self.check_source(source)
            images, labels = self._load("train")
            if not 0 <= self.hparams.val_size < len(labels):
                raise ConfigError(
                    f"data.val_size={self.hparams.val_size} must be smaller than the {len(labels)} training images."
                )
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.hparams.split_seed))
            val_index, train_index = order[: self.hparams.val_size], order[self.hparams.val_size :]
            self.train_set = TensorPairDataset(images[train_index], labels[train_index])
            self.val_set = TensorPairDataset(images[val_index], labels[val_index])
        if stage == "predict" and self.hparams.predict_path:
            self._setup_user_images(Path(self.hparams.predict_path).expanduser())
            return
        if stage in (None, "test", "predict") and self.test_set is None:
            if self._clean_test is None:  # read once, however many corrupted copies are made from it
                self._clean_test = self._load("test")
            images, labels = self._clean_test
            if self.active_corruption is not None:
                images = self._corrupted(images, labels, *self.active_corruption)
            self.test_set = TensorPairDataset(images, labels)
        if stage == "predict":
            self.predict_set, self.predict_has_labels = self.test_set, True
            self.predict_sources = [f"test[{i}]" for i in range(len(self.test_set))]

    def _setup_user_images(self, path: Path) -> None:
        found = read_user_images(path, self.image_shape)
        images = self._to_input_channels(found.images)
        self.predict_set = TensorPairDataset(images, torch.full((len(images),), -1, dtype=torch.long))
        self.predict_sources, self.unreadable, self.predict_has_labels = found.sources, found.unreadable, False

    def corruption_runs(self) -> list[tuple[str, int]]:
        """Every (corruption, severity) that `corruption: all` tests, in a fixed order."""
        return [(name, s) for name in corruptions.available(self.input_shape[0]) for s in corruptions.SEVERITIES]

    def use_corruption(self, corruption: tuple[str, int] | None) -> None:
        """Test on this corrupted copy next (None: the clean split); the next `setup("test")` builds it."""
        self.active_corruption, self.test_set = corruption, None

    def _corrupted(self, images: Tensor, labels: Tensor, name: str, severity: int) -> Tensor:
        """The corrupted copy, from the cache when a whole one is there (checked by its SHA-256 like the decoded
        images), else made and cached: keyed by the clean split's own digest, so another copy never matches."""
        if self._clean_test_key is None:
            self._clean_test_key = tensor_digest(images, labels)[:16]
        cache = self.cache_dir / "corruptions" / f"{self.name}-{self._clean_test_key}-{name}-{severity}.pt"
        if cache.is_file():
            cached = read_cache(cache, len(labels), tuple(images.shape[1:]))
            if cached is not None:
                return cached[0]
        corrupted = corruptions.corrupt(images, name, severity)
        save_cache({"images": corrupted, "labels": labels, "sha256": tensor_digest(corrupted, labels)}, cache)
        return corrupted

    # -- loaders -------------------------------------------------------------------------------
    def _loader(self, dataset: TensorPairDataset | None, train: bool, predict: bool = False) -> DataLoader | DeviceBatches:
        if dataset is None:
            raise RuntimeError("Call setup() with the matching stage before asking for a dataloader.")
        workers = self.hparams.num_workers
        batch_size = self.hparams.batch_size if train else self.hparams.eval_batch_size or self.hparams.batch_size
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        sampler = ShardSampler(dataset, shuffle=train, seed=run_seed(), num_replicas=world, rank=rank,
                               batch_size=batch_size)
        if train and self._resume_position is not None:
            self._resume_mid_epoch(sampler, batch_size, world)
        if self.hparams.on_device and not predict:  # predict keeps the DataLoader: Lightning tracks its indices
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            return DeviceBatches(*dataset.on(device), sampler, batch_size)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=keep_batch,
            generator=torch.Generator(),  # else each epoch's iterator draws a seed from the global RNG
        )

    # -- resuming ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """Saved in every checkpoint: how far the current training epoch got, in batches and in images (over all
        ranks), so a resume skips exactly the images already trained on, whatever batch size it runs with."""
        if self.trainer is None or not self.trainer.training or self.trainer.should_stop:
            return {}  # an epoch the trainer stops early (max_time, a callback) counts as done: it resumes at the next
        done = batches_done_in_epoch(self.trainer)
        epoch, start_batch, start_images = self._position_offset or (-1, 0, 0)
        if epoch != self.trainer.current_epoch:
            start_batch, start_images = 0, 0
        images = start_images + (done - start_batch) * self.hparams.batch_size * self.trainer.world_size
        return {"batches_done": done, "epoch_batches": int(self.trainer.num_training_batches), "images_done": images}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        done, total = state_dict.get("batches_done", 0), state_dict.get("epoch_batches", 0)
        self._resume_position = dict(state_dict) if 0 < done < total else None  # a finished epoch resumes at the next

    def _resume_mid_epoch(self, sampler: ShardSampler, batch_size: int, world: int) -> None:
        """Skip the images the interrupted epoch trained on, and, when the batch size or the number of processes
        changed, move Lightning's batch counter to the batch the rest of the epoch starts at (the loop ends the
        epoch when that counter reaches the epoch's batch count, so counting the old batches in the new size would
        cut the epoch short or train some images twice)."""
        position, self._resume_position = self._resume_position, None
        done = position["batches_done"]
        images = position.get("images_done", done * batch_size * world)  # checkpoints from before images were counted
        sampler.skip_images = images
        aligned = -(-len(sampler) // batch_size) - -(-sampler.remaining() // batch_size)
        if aligned != done and self.trainer is not None:
            shift_batches_done(self.trainer, aligned - done)
        self._position_offset = (self.trainer.current_epoch if self.trainer is not None else 0, aligned, images)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, train=False, predict=True)

    # -- transforms ----------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Lightning converts the inputs for `*-true` precisions before this hook, while they are still uint8:
        # what is made here gets the same conversion, so it reaches the network in the dtype it computes in.
        convert = self.trainer.precision_plugin.convert_input if self.trainer is not None else (lambda data: data)
        if not isinstance(batch, (tuple, list)) or batch[0].dtype != torch.uint8:
            return convert(batch)  # not one of our loaders' batches, e.g. the model summary's example input
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        return convert(self.preprocess(images, train=training)), labels

    def preprocess(self, images: Tensor, train: bool = False) -> Tensor:
        """uint8 images to the normalized float batch a network sees; `train` adds the augmentation."""
        if train and self.hparams.augment:
            images = augment.random_crop(images, self.hparams.crop_padding)
            if self.hparams.horizontal_flip:
                images = augment.random_horizontal_flip(images)
        mean, std, permutation = self._constants_on(images.device)
        images = augment.normalize(images, mean, std)
        images = images if permutation is None else augment.permute_pixels(images, permutation)
        return augment.resize(images, self.hparams.get("resize"))

    def _constants_on(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
        if device not in self._device_constants:
            mean, std = self.normalization
            permutation = None if self.permutation is None else self.permutation.to(device)
            self._device_constants[device] = (torch.tensor(mean, device=device), torch.tensor(std, device=device), permutation)
        return self._device_constants[device]
