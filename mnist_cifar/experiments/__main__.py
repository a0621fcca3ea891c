"""`python -m mnist_cifar.experiments {list,run,report}`: see the package docstring."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_cifar.errors import ConfigError, UserFacingError
from mnist_cifar.experiments import definition
from mnist_cifar.experiments.report import write_report
from mnist_cifar.experiments.runner import SweepInterrupted, run_experiment


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m mnist_cifar.experiments", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the experiments and their variants")
    for name, text in (("run", "run the missing runs, then write the report"), ("report", "rebuild the report")):
        command = commands.add_parser(name, help=text)
        command.add_argument("experiment", help="a name from `list`, or the path of an experiment .yaml file")
        command.add_argument("--root", type=Path, default=Path("lightning_logs"), help="where runs are logged")
        command.add_argument("--report_dir", type=Path, help="default: <root>/experiments/<experiment>")
        if name == "run":
            command.add_argument("--seeds", type=int, default=3)
            command.add_argument("--data_dir", help="passed to every run as --data.data_dir")
            command.add_argument("--only", nargs="+", help="run only these variants")
            command.add_argument("--jobs", type=int, default=1,
                                 help="runs side by side, each its own process (CPU threads are shared out)")
            command.add_argument("--gpus", nargs="+", metavar="ID",
                                 help="GPU ids; job slot i runs on GPU ids[i %% len(ids)] (CUDA_VISIBLE_DEVICES)")
    # Anything else (e.g. --trainer.max_epochs=2) is passed to every run as a LightningCLI override.
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> None:
    args, extra = parse(argv)
    try:
        if args.command == "list":
            for name in definition.available():
                experiment = definition.load(name)
                print(f"{name}: {experiment.description}\n    " + ", ".join(v.name for v in experiment.variants))
            return
        experiment = definition.load(args.experiment)
        if args.command == "run":
            if args.jobs < 1:
                raise ConfigError(f"--jobs must be at least 1, got {args.jobs}.")
            names = [variant.name for variant in experiment.variants]
            unknown = [name for name in args.only or [] if name not in names]
            if unknown:
                raise ConfigError(f"--only names no variant of {experiment.name}: {', '.join(unknown)}. "
                                  f"Its variants: {', '.join(names)} (`python -m mnist_cifar.experiments list`).")
            extra = extra + ([f"--data.data_dir={args.data_dir}"] if args.data_dir else [])
            jobs = args.jobs if not args.gpus or args.jobs > 1 else len(args.gpus)
            try:
                runs = run_experiment(experiment, args.seeds, args.root, extra, args.only, jobs, args.gpus)
            except SweepInterrupted as stop:
                print(f"error: the sweep was stopped ({stop}); run the same command again to finish it.",
                      file=sys.stderr)
                raise SystemExit(128 + stop.signal_number) from None
            for run in runs:
                print(f"{run.variant} seed {run.seed}: {run.outcome}")
            failed = [run for run in runs if run.failed]
        report = write_report(experiment, args.root, args.report_dir or args.root / "experiments" / experiment.name)
        print(f"report: {report}" if report else "no finished runs to report yet")
        if args.command == "run" and failed:
            names = "; ".join(f"{r.variant} seed {r.seed} ({r.outcome}, see {r.folder})" for r in failed)
            print(f"error: {len(failed)} run(s) did not finish: {names}.", file=sys.stderr)
            raise SystemExit(1)
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
