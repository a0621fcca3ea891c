"""The LightningCLI every run goes through (`main.py`, the tests and the experiment runner).

It links the data set's shape and class count into the network, sets the CPU thread count (and flushes
denormal floats to zero, which keeps late CPU epochs as fast as early ones), checks
`--ckpt_path` before Lightning opens it, and after `fit` tests the best checkpoint once, so a run
ends with the test figure that `python main.py test --ckpt_path <best>` reproduces.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
import time
import warnings
from argparse import ArgumentError
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.accelerators import Accelerator, CPUAccelerator
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_only

from mnist_cifar import CONFIGS
from mnist_cifar.cli.corruption_tests import test_every_corruption
from mnist_cifar.data import ImageDataModule
from mnist_cifar.errors import ConfigError, exits_on_user_errors
from mnist_cifar.moved import new_name
from mnist_cifar.reporting.run_record import RunRecord
from mnist_cifar.runs.checkpoint_io import NO_ROOM
from mnist_cifar.runs.checkpoints import check_checkpoint, find_last, with_checkpoint_config
from mnist_cifar.runs.folder import RunFolder, add_process_seconds, run_dir
from mnist_cifar.runs.lock import hold, release
from mnist_cifar.runs.provenance import provenance
from mnist_cifar.runs.resume import LatestCheckpoint, StopOnNonFiniteLoss, StopOnSignal, die_with_the_launcher
from mnist_cifar.runs.yaml_bounds import bound_jsonargparse, check_config_files, load_file
from mnist_cifar.training.classifier import ImageClassifier, refuse_torch_one_cycle

SUBCOMMANDS = ("fit", "validate", "test", "predict")
CPU_UNSUPPORTED_PRECISIONS = {"16", "16-mixed", "16-true"}
DEFAULT_CONFIG = CONFIGS / "default.yaml"


class RunConfigSaver(SaveConfigCallback):
    """Save the resolved config and the run's provenance (`provenance.json`: commit, packages, machine) in the run's
    folder. A resumed `fit` keeps the run's original `config.yaml` and records the resume in `resume_<N>.yaml`:
    every key whose value differs from the original, the checkpoint it resumed from and the provenance of the
    process that resumed it (written once the resume is accepted, at fit start). With no logger there is no run
    folder, so nothing is written (Lightning would write `config.yaml` into the current directory)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 (SaveConfigCallback's own signature)
        super().__init__(*args, **kwargs)
        self._resume_record: dict | None = None
        self._run_dir = Path(".")
        self.resuming_from: str | None = None  # set by the CLI before a `fit --ckpt_path` (Lightning sets
        # trainer.ckpt_path only after `setup`, where the config is written)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.loggers or self.already_saved:
            return
        self._run_dir = Path(run_dir(trainer))  # log_dir broadcasts: every rank must ask, and only here
        original = self._run_dir / self.config_filename
        resuming = stage == "fit" and self.resuming_from is not None
        resuming = trainer.strategy.broadcast(resuming and trainer.is_global_zero and original.is_file())
        if not resuming:  # as Lightning's setup, in the run's folder (Lightning's `trainer.log_dir` is MLflow's root)
            if trainer.is_global_zero:
                self._run_dir.mkdir(parents=True, exist_ok=True)
                self.parser.save(self.config, str(original), skip_none=False, overwrite=True, multifile=self.multifile)
                self.save_config(trainer, pl_module, stage)
            self.already_saved = trainer.strategy.broadcast(True)
            return
        if trainer.is_global_zero:
            now = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
            self._resume_record = {"resumed_from": str(self.resuming_from),
                                   "changed": config_changes(load_file(original), now),
                                   "provenance": provenance()}
        self.already_saved = True

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        RunFolder.at(self._run_dir).provenance.write_text(json.dumps(provenance(), indent=2) + "\n")

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        record, self._resume_record = self._resume_record, None
        if record is None or not trainer.is_global_zero:
            return
        run = RunFolder.at(self._run_dir)
        number = 1 + len(run.resume_records())
        run.resume_record(number).write_text(yaml.safe_dump(record, sort_keys=False))


# A resume runs in the run's own folder by definition: where the logger writes is the same place, however spelled.
IGNORED_CHANGES = {"ckpt_path", *(f"trainer.logger.init_args.{key}" for key in ("save_dir", "name", "version"))}


def config_changes(original: dict, now: dict) -> dict[str, dict]:
    """`{dotted.key: {"was": old, "now": new}}` for every leaf whose value differs (lists compare whole)."""
    before, after = _flatten(original or {}), _flatten(now or {})
    return {key: {"was": before.get(key), "now": after.get(key)}
            for key in sorted(before.keys() | after.keys())
            if key not in IGNORED_CHANGES and before.get(key) != after.get(key)}


def _flatten(config: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


class ExperimentCLI(LightningCLI):
    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 (LightningCLI's own signature)
        flush_denormals()  # first: before anything starts torch's intra-op threads
        bound_jsonargparse()  # every YAML jsonargparse reads (configs, values, checkpoint configs) within bounds
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse's parser class)
        parser.link_arguments("data.input_shape", "model.net.init_args.input_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.net.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")
        parser.add_lightning_class_args(LatestCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(StopOnNonFiniteLoss, "nonfinite_loss")
        parser.add_argument(
            "--num_threads",
            type=int | None,
            default=None,
            help="CPU threads for torch (torch.set_num_threads); small models often train fastest on 1.",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, test the best checkpoint (by val/acc) on the test set and report it.",
        )

    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001
        if isinstance(args, (dict, Namespace)):
            super().parse_arguments(parser, args)
        else:
            argv = list(sys.argv[1:] if args is None else args)
            refuse_top_level_optimizer(argv)
            check_config_files(argv)
            self.config = parser.parse_args(with_checkpoint_config(argv))
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if subcommand == "fit" and ckpt_path:
            ckpt_path = self._resume_in_its_run(self.config.fit, str(ckpt_path))
        if ckpt_path:
            check_checkpoint(str(ckpt_path))

    @staticmethod
    def _resume_in_its_run(config: Namespace, ckpt_path: str) -> str:
        """`fit --ckpt_path` continues the run that saved the checkpoint, in its own folder (one set of curves,
        one HParams row, the best-checkpoint tracking kept); `last` is that run's `last.ckpt`. With a list of
        loggers the first names the run folder, and each of them continues in it."""
        logger = config.trainer.get("logger")
        loggers = logger if isinstance(logger, list) else [logger]
        folders = [lg.init_args for lg in loggers
                   if isinstance(lg, Namespace) and lg.get("init_args") is not None and "save_dir" in lg.init_args]
        if not folders:
            return ckpt_path
        first = folders[0]
        if ckpt_path == "last":
            ckpt_path = str(find_last(Path(first.save_dir), first.get("name") or "", first.get("version")))
            config.ckpt_path = ckpt_path
        run = RunFolder.of_checkpoint(ckpt_path)
        if run is not None:  # the run as its checkpoint's path spells it: a linked checkpoints/ stays in its run
            for init_args in folders:
                init_args.save_dir, init_args.name, init_args.version = str(run.save_dir), run.name, run.version
        return ckpt_path

    def _parse_ckpt_path(self) -> None:
        """Do nothing: LightningCLI would merge the checkpoint's model hyperparameters over the parsed config,
        so `--model.*` typed by the user would lose to the checkpoint. `with_checkpoint_config` has already put
        the checkpoint's config first, under everything the user typed (lightning 2.6.6, `LightningCLI.__init__`)."""

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_values(config)
        check_loggers(config)
        if self.subcommand == "fit":  # before any data is read (configure_optimizers checks it again)
            scheduler = config.model.get("scheduler")
            refuse_torch_one_cycle(scheduler.get("class_path") if isinstance(scheduler, Namespace) else None)
        drop_progress_bar_if_disabled(config)
        fold_nonfinite_stop_into_its_group(config)
        if self.subcommand != "fit":  # restoring a fit's ModelCheckpoint state into an evaluation run, whose log
            # folder is new by design, makes Lightning warn that best-checkpoint tracking is not reloaded: it is
            # not needed outside fit.
            warnings.filterwarnings("ignore", message="The dirpath has changed", module="lightning.pytorch.callbacks")
        threads = config.get("num_threads")
        if threads:
            torch.set_num_threads(threads)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        if self.trainer.loggers:  # after the user's loggers: the first one still names the run folder
            self.trainer.loggers = [*self.trainer.loggers, RunRecord(self.trainer.loggers[0])]
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_precision(str(config.trainer.precision), self.trainer.accelerator)

    def before_fit(self) -> None:
        # Fix the run's version now: `ddp_spawn` fits and tests in fresh processes, and each would otherwise
        # pick the next free `version_N` for itself, splitting one run over two folders.
        for logger in self.trainer.loggers:
            _ = logger.version
        for callback in self.trainer.callbacks:
            if isinstance(callback, RunConfigSaver):
                callback.resuming_from = self.config.fit.get("ckpt_path")
        folder = run_dir(self.trainer)
        if folder and rank_zero_only.rank == 0:  # from the environment: ranks are not set up yet
            PROCESS_TIME["folder"] = Path(folder)
            if self.trainer.loggers:  # one process per run folder, from here to the process's end
                RUN_LOCK["handle"] = hold(RunFolder.at(folder))

    def after_fit(self) -> None:
        trainer = self.trainer
        for callback in trainer.callbacks:
            if isinstance(callback, StopOnSignal):
                callback.after_stop(trainer)  # a signal in the last validation: stop here, not test
        if not self.config.fit.test_after_fit or trainer.fast_dev_run or trainer.interrupted:
            return
        callback = trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback else ""
        trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        self.after_test()

    def after_test(self) -> None:
        """With `--data.corruption all`: the tested weights on every corrupted copy of the test split too."""
        if getattr(self.datamodule.hparams, "corruption", None) == "all" and not self.trainer.interrupted:
            test_every_corruption(self.trainer, self.model, self.datamodule)


TOP_LEVEL_OPTIMIZER_KEYS = {"--optimizer": "model.optimizer", "--lr_scheduler": "model.scheduler"}


def refuse_top_level_optimizer(argv: Sequence[str]) -> None:
    """Refuse LightningCLI's top-level `--optimizer` / `--lr_scheduler`, naming the model's own keys.

    LightningCLI would build them in place of the model's `configure_optimizers` (dropping a network's parameter
    groups, the config's weight decay and the schedule's length) while the saved hyperparameters kept the model's
    optimizer, and `--lr_scheduler` alone did nothing. `auto_configure_optimizers=False` turns them off; this says
    what to type instead.
    """
    for arg in argv:
        key = arg.split("=", 1)[0]
        for top, own in TOP_LEVEL_OPTIMIZER_KEYS.items():
            if key == top or key.startswith(top + "."):
                rest = key[len(top):]
                nested = f"--{own}.init_args{rest}" if rest and rest != ".class_path" else f"--{own}"
                raise ConfigError(
                    f"{key}: the optimizer and the schedule are arguments of the model here, so LightningCLI's "
                    f"top-level {top} is not used (it would replace the model's own optimizer construction: a "
                    f"network's parameter groups, the weight decay, the schedule's length, and what the run records). "
                    f"Use {nested} instead, e.g. --model.optimizer torch.optim.SGD --model.optimizer.init_args.lr 0.1, "
                    f"or --model.scheduler torch.optim.lr_scheduler.StepLR --model.scheduler.init_args.step_size 5."
                )


LIGHTNING_MLFLOW = {"lightning.pytorch.loggers.MLFlowLogger", "lightning.pytorch.loggers.mlflow.MLFlowLogger"}
FIGURE_LOGGERS = {"lightning.pytorch.loggers.TensorBoardLogger", "mnist_cifar.reporting.loggers.TensorBoardLogger",
                  "mnist_cifar.reporting.loggers.MLFlowLogger"}


def check_loggers(config: Namespace) -> None:
    """Refuse Lightning's own MLFlowLogger, and say in one line when no logger of the run takes figures."""
    logger = config.trainer.get("logger")
    loggers = logger if isinstance(logger, list) else [logger]
    names = [new_name(str(lg.get("class_path"))) for lg in loggers if isinstance(lg, Namespace)]
    if LIGHTNING_MLFLOW & set(names):
        raise ConfigError(
            "--trainer.logger lightning.pytorch.loggers.MLFlowLogger has no run folder here (its log_dir is the "
            "store's root, so every run's config.yaml would land in one place and --ckpt_path last could not find "
            "the run). Use --trainer.logger mnist_cifar.reporting.loggers.MLFlowLogger: the same MLflow tracking, with "
            "save_dir/name/version run folders like TensorBoard's (tracking_uri, tags, log_model and prefix as "
            "Lightning's).")
    if names and not FIGURE_LOGGERS & set(names) and rank_zero_only.rank == 0:
        print(f"{', '.join(n.rsplit('.', 1)[-1] for n in names)} takes no figures: the sample grid, confusion matrix "
              f"and confident mistakes are drawn for TensorBoardLogger or mnist_cifar.reporting.loggers.MLFlowLogger only "
              f"(the scalars, per-class accuracies included, are all logged).", file=sys.stderr)


def check_values(config: Namespace) -> None:
    """Refuse values that would only fail after the data was read, naming the key (the DataModule checks its own)."""
    max_epochs = config.trainer.get("max_epochs")
    if max_epochs is not None and max_epochs != -1 and max_epochs < 1:
        raise ConfigError(f"--trainer.max_epochs {max_epochs}: give a positive number of epochs, or -1 for no limit.")
    optimizer = config.model.get("optimizer")
    init_args = optimizer.get("init_args") if isinstance(optimizer, Namespace) else None
    lr = init_args.get("lr") if init_args is not None else None
    if isinstance(lr, (int, float)) and lr <= 0:
        raise ConfigError(f"--model.optimizer.init_args.lr {lr}: the learning rate must be positive, e.g. 0.001 "
                          f"for Adam or 0.01-0.1 for SGD.")


def drop_progress_bar_if_disabled(config: Namespace) -> None:
    """`--trainer.enable_progress_bar false` removes default.yaml's progress bar callback (Lightning refuses a
    progress bar callback beside that flag)."""
    callbacks = config.trainer.get("callbacks")
    if config.trainer.get("enable_progress_bar") is not False or not isinstance(callbacks, list):
        return
    config.trainer.callbacks = [c for c in callbacks if not _is_progress_bar(c)]


def fold_nonfinite_stop_into_its_group(config: Namespace) -> None:
    """A `StopOnNonFiniteLoss` in `trainer.callbacks` (run configs written before the `nonfinite_loss` group list one)
    would run beside the group's own, and on a GPU read the loss at every step whatever the group says. Listed with
    its defaults it is the group's callback and is dropped; listed with a value of its own it is refused, since the
    group (`--nonfinite_loss.*`) is where that value goes."""
    callbacks = config.trainer.get("callbacks")
    if not isinstance(callbacks, list):
        return
    kept = []
    for callback in callbacks:
        if _callback_class(callback) is not StopOnNonFiniteLoss:  # exactly it: a subclass of the user's is kept
            kept.append(callback)
            continue
        init_args = callback.get("init_args")
        interval = init_args.get("check_every_n_batches") if init_args is not None else None
        if interval is not None:
            raise ConfigError(
                f"trainer.callbacks lists {callback.class_path} with check_every_n_batches {interval}: every run "
                f"already has that callback, set by the nonfinite_loss group. Remove it from trainer.callbacks and "
                f"pass --nonfinite_loss.check_every_n_batches {interval} instead.")
    config.trainer.callbacks = kept


def _is_progress_bar(callback: object) -> bool:
    cls = _callback_class(callback)
    return cls is not None and issubclass(cls, ProgressBar)


def _callback_class(callback: object) -> type | None:
    """The class a `trainer.callbacks` entry is: what its `class_path` resolves to (an old module path included),
    or an instance's own."""
    class_path = callback.get("class_path") if isinstance(callback, Namespace) else None
    if not class_path:
        return type(callback)
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name, None)
    return cls if isinstance(cls, type) else None


def check_precision(precision: str, accelerator: Accelerator) -> None:
    """Refuse a precision the device cannot run, instead of Lightning's silent substitute on the CPU."""
    if isinstance(accelerator, CPUAccelerator) and precision in CPU_UNSUPPORTED_PRECISIONS:
        raise ConfigError(
            f"--trainer.precision {precision} is for CUDA GPUs: on the CPU, 16-mixed silently becomes bf16-mixed, "
            f"and 16-true (float16 weights without loss scaling) diverged to NaN in the first epoch here. On the "
            f"CPU use 32-true (the default), 64-true, bf16-mixed or bf16-true; on a GPU, prefer bf16-mixed."
        )


def _defaults(default_config: Path | None) -> dict:
    return {"default_config_files": [str(default_config)]} if default_config else {}


def flush_denormals() -> None:
    """Compute denormal floats (below 1.2e-38) as zero on the CPU.

    On x86 every operation on a denormal takes a slow microcode path. Weight decay drives the weights of dead units
    toward zero until they are denormal: a CourseNet trained 14 epochs had 12,721 of its 145,578 weights there and
    stepped 5.6x slower than a fresh one (435 vs 78 ms a batch, one thread), so CPU epochs grew 4x slower as runs
    went on. Flushing them changes values below 1.2e-38 only. It must come before torch starts its intra-op
    threads: each thread takes the setting when it is created, not later.
    """
    torch.set_flush_denormal(True)


def build(args: Sequence[str], default_config: Path | None = None) -> ExperimentCLI:
    """Parse a config and build model, data and trainer without running a subcommand (notebooks, benchmarks)."""
    return ExperimentCLI(ImageClassifier, ImageDataModule, subclass_mode_data=True, auto_configure_optimizers=False,
                         parser_kwargs=_defaults(default_config), save_config_callback=RunConfigSaver,
                         save_config_kwargs={"overwrite": True}, args=list(args), run=False)


def _quiet_full_disk_in_threads(hook_args: threading.ExceptHookArgs) -> None:
    """A full disk also fails TensorBoard's event-writer thread: one line for it, not a second traceback beside
    the checkpoint's message."""
    error = hook_args.exc_value
    if isinstance(error, OSError) and error.errno in NO_ROOM:
        print(f"warning: a background writer ({hook_args.thread.name if hook_args.thread else 'thread'}) stopped: "
              f"{error.strerror} ({error.filename or 'a log file'}).", file=sys.stderr)
        return
    threading.__excepthook__(hook_args)


PROCESS_TIME: dict[str, Path] = {}  # the run folder of this process's `fit`, once known (rank zero only)
RUN_LOCK: dict[str, int] = {}  # the lock this process holds on that folder


def run(args: Sequence[str] | None = None, default_config: Path | None = None,
        started: float | None = None) -> ExperimentCLI:
    """Run one LightningCLI command; a `UserFacingError` is printed as one paragraph and exits with its status
    (`mnist_cifar.errors.exits_on_user_errors`).

    `started` (`time.monotonic()` when the process started, as main.py takes it): a `fit` adds the process's wall
    time to its run folder's `process.json` as it exits, however it exits."""
    defaults = _defaults(default_config)
    threading.excepthook = _quiet_full_disk_in_threads
    die_with_the_launcher()
    PROCESS_TIME.clear()
    try:
        return _run(args, defaults)
    finally:
        folder = PROCESS_TIME.pop("folder", None)
        if started is not None and folder is not None and folder.is_dir():
            add_process_seconds(folder, time.monotonic() - started)
        release(RUN_LOCK.pop("handle", None))


def _run(args: Sequence[str] | None, defaults: dict) -> ExperimentCLI:
    with exits_on_user_errors():
        try:
            return ExperimentCLI(
                ImageClassifier,
                ImageDataModule,
                subclass_mode_data=True,
                auto_configure_optimizers=False,
                parser_kwargs={"exit_on_error": False, **{command: dict(defaults) for command in SUBCOMMANDS}},
                save_config_callback=RunConfigSaver,
                save_config_kwargs={"overwrite": True},
                args=list(args) if args is not None else None,
            )
        except ArgumentError as error:  # jsonargparse's, with `exit_on_error: False`: no usage dump before it
            command = next((f" {a}" for a in (args or sys.argv[1:]) if a in SUBCOMMANDS), "")
            raise ConfigError(f"{str(error).rstrip('.')}. `python main.py{command} --help` lists the options.") from None
