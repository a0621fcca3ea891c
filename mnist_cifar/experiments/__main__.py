"""`python -m mnist_cifar.experiments {list,run,status,cancel,report,robustness,tune}`: see the package docstring."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_cifar.errors import ConfigError, Interrupted, WorkFailed, exits_on_user_errors
from mnist_cifar.experiments import definition, slurm
from mnist_cifar.experiments.report import write_report
from mnist_cifar.experiments.runner import run_experiment

SLURM_OPTIONS = {  # --backend slurm: what each run asks for (over the experiment file's `slurm:` block)
    "partition": (str, "SLURM partition"), "time": (str, "time limit per job: minutes, or [D-]HH:MM[:SS]"),
    "cpus_per_run": (int, "CPUs per task (the run's --num_threads)"), "gpus_per_run": (int, "GPUs per node"),
    "nodes_per_run": (int, "nodes per run (multi-node DDP)"),
    "tasks_per_node": (int, "DDP processes per node (one per GPU)"), "account": (str, "SLURM account"),
    "qos": (str, "SLURM QoS"), "mem": (str, "memory per node, e.g. 16G"),
    "signal_seconds": (int, "seconds before the time limit at which the run saves and is requeued (default 120)"),
    "retries": (int, "starts again after a failure, before it counts as failed (default 2)"),
    "max_requeues": (int, "requeues after a time limit (default 3; preemptions are always requeued)"),
    "parallel": (int, "array tasks running at once (default 64)"),
}


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m mnist_cifar.experiments", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the experiments and their variants")
    for name, text in (("run", "run the missing runs, then write the report"), ("report", "rebuild the report"),
                       ("status", "every run's state: from its folder, and the SLURM queue"),
                       ("cancel", "cancel the sweep's SLURM jobs")):
        command = commands.add_parser(name, help=text)
        command.add_argument("experiment", help="a name from `list`, or the path of an experiment .yaml file")
        command.add_argument("--root", type=Path, default=Path("lightning_logs"), help="where runs are logged")
        command.add_argument("--report_dir", type=Path, help="default: <root>/experiments/<experiment>")
        if name in ("run", "status"):
            command.add_argument("--seeds", type=int, default=3)
            command.add_argument("--only", nargs="+", help="run only these variants")
        if name == "run":
            command.add_argument("--data_dir", help="passed to every run as --data.data_dir")
            command.add_argument("--jobs", type=int, default=1,
                                 help="runs side by side, each its own process (CPU threads are shared out)")
            command.add_argument("--gpus", nargs="+", metavar="ID",
                                 help="GPU ids; job slot i runs on GPU ids[i %% len(ids)] (CUDA_VISIBLE_DEVICES)")
            command.add_argument("--backend", choices=("local", "slurm"), default="local",
                                 help="local: a process pool here (default); slurm: one job array, submitted")
            command.add_argument("--wait", action="store_true", help="slurm: follow the jobs until they end")
            for option, (kind, text) in SLURM_OPTIONS.items():
                command.add_argument(f"--{option}", type=kind, help=f"slurm: {text}")
            command.add_argument("--sbatch", action="append", metavar="OPTION",
                                 help="slurm: any other sbatch option, e.g. --sbatch=--constraint=a100 (repeatable)")
    robust = commands.add_parser("robustness", help="test every finished run on every corruption; write the "
                                                     "calibration and robustness report")
    robust.add_argument("experiment", help="a name from `list`, or the path of an experiment .yaml file")
    robust.add_argument("--root", type=Path, default=Path("lightning_logs"), help="where the runs are")
    robust.add_argument("--report_dir", type=Path, help="default: <root>/experiments/<experiment>")
    robust.add_argument("--seeds", type=int, default=3)
    robust.add_argument("--data_dir", help="passed to every test as --data.data_dir")
    tune = commands.add_parser("tune", help="an Optuna study: search a config's keys (see study.py)")
    tune.add_argument("study", help="the path of a study .yaml file")
    tune.add_argument("--root", type=Path, default=Path("lightning_logs"), help="where trials are logged")
    tune.add_argument("--jobs", type=int, default=1, help="trials side by side (workers sharing the study)")
    tune.add_argument("--storage", help="a database URL (postgresql://...) instead of the journal file, for "
                                        "workers on several machines")
    tune.add_argument("--data_dir", help="passed to every trial as --data.data_dir")
    tune.add_argument("--trials", type=int, help="the study file's trials budget, overridden")
    # Anything else (e.g. --trainer.max_epochs=2) is passed to every run as a LightningCLI override.
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> None:
    args, extra = parse(argv)
    data_dir = getattr(args, "data_dir", None)  # run and tune pass it to every run
    extra = extra + ([f"--data.data_dir={data_dir}"] if data_dir else [])
    with exits_on_user_errors():
        if args.command == "list":
            for name in definition.available():
                experiment = definition.load(name)
                print(f"{name}: {experiment.description}\n    " + ", ".join(v.name for v in experiment.variants))
            return
        if args.command == "tune":
            tune_study(args, extra)
            return
        if args.command == "robustness":
            robustness_report(args, extra)
            return
        experiment = definition.load(args.experiment)
        names = [variant.name for variant in experiment.variants]
        unknown = [name for name in getattr(args, "only", None) or [] if name not in names]
        if unknown:
            raise ConfigError(f"--only names no variant of {experiment.name}: {', '.join(unknown)}. "
                              f"Its variants: {', '.join(names)} (`python -m mnist_cifar.experiments list`).")
        if args.command == "status":
            for run, state in slurm.run_states(experiment, args.seeds, args.root, args.only):
                print(f"{run.variant} seed {run.seed}: {state}")
            return
        if args.command == "cancel":
            cancelled = slurm.cancel(experiment, args.root)
            print(f"cancelled job(s) {', '.join(cancelled)}" if cancelled else "no job of this sweep is in the queue")
            return
        if args.command == "run" and args.backend == "slurm":
            failed = submit_to_slurm(experiment, args, extra)
            if failed is None:
                return
        elif args.command == "run":
            if args.jobs < 1:
                raise ConfigError(f"--jobs must be at least 1, got {args.jobs}.")
            jobs = args.jobs if not args.gpus or args.jobs > 1 else len(args.gpus)
            runs = run_experiment(experiment, args.seeds, args.root, extra, args.only, jobs, args.gpus)
            for run in runs:
                print(f"{run.variant} seed {run.seed}: {run.outcome}")
            failed = [run for run in runs if run.failed]
        else:
            failed = []
        report = write_report(experiment, args.root, args.report_dir or args.root / "experiments" / experiment.name)
        print(f"report: {report}" if report else "no finished runs to report yet")
        if failed:
            names = "; ".join(f"{r.variant} seed {r.seed} ({r.outcome.splitlines()[0]}, see {r.folder})" for r in failed)
            raise WorkFailed(f"{len(failed)} run(s) did not finish: {names}.")


def robustness_report(args: argparse.Namespace, extra: list[str]) -> None:
    from mnist_cifar.experiments import robustness

    experiment = definition.load(args.experiment)
    failed = robustness.test_runs(experiment, args.root, args.seeds, extra)
    report = robustness.write_robustness_report(experiment, args.root,
                                                args.report_dir or args.root / "experiments" / experiment.name)
    print(f"report: {report}" if report else "no finished run has been tested on the corruptions yet")
    if failed:
        raise WorkFailed(f"{len(failed)} test(s) did not finish: {'; '.join(failed)}.")


def tune_study(args: argparse.Namespace, extra: list[str]) -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ConfigError("tune needs Optuna: pip install -e '.[tune]'.") from None
    from mnist_cifar.experiments import study as studies

    chosen = studies.load(args.study)
    if args.trials is not None:
        chosen.trials = args.trials
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}.")
    tuner = studies.Tuner(chosen, args.root, args.storage, args.jobs, extra)
    tuner.run()
    folder = studies.write_outputs(chosen, args.root, args.storage)
    print(f"study {chosen.name}: {folder / 'trials.csv'}" + (f", best config {folder / 'best.yaml'}"
                                                             if (folder / "best.yaml").is_file() else ""))
    if tuner.stopping is not None:
        raise Interrupted(tuner.stopping, "the study was stopped; run the same command again to continue it.")
    if tuner.crashed:
        raise WorkFailed(f"{len(tuner.crashed)} worker(s) of the study stopped on an error, their trials marked FAIL: "
                         f"{'; '.join(tuner.crashed)}. Fix the cause, then run the same command again to continue "
                         f"the study.")


def submit_to_slurm(experiment: definition.Experiment, args: argparse.Namespace, extra: list[str]) -> list | None:
    """Submit the missing runs as one job array; with --wait follow them and return the failed ones, else None."""
    if args.jobs != 1 or args.gpus:
        raise ConfigError("--jobs and --gpus are the local backend's; under --backend slurm give --gpus_per_run, "
                          "--tasks_per_node and --parallel instead.")
    chosen = slurm.resources(experiment.slurm, {**{option: getattr(args, option) for option in SLURM_OPTIONS},
                                                "sbatch": args.sbatch})
    runs, array = slurm.submit(experiment, args.seeds, args.root, extra, args.only, chosen)
    for run in runs:
        print(f"{run.variant} seed {run.seed}: {run.outcome}")
    if array:
        print(f"submitted job array {array}: `python -m mnist_cifar.experiments status {args.experiment}` shows "
              f"each run, `cancel` cancels them")
    if not args.wait:
        return None
    states = slurm.wait(experiment, args.seeds, args.root, args.only)
    failed = []
    for run, state in states:
        if not state.startswith("done"):
            run.outcome = state
            failed.append(run)
    return failed


if __name__ == "__main__":
    main()
