"""The SLURM backend against a real cluster: a sweep submitted as a job array gives the local backend's figures, a
run signalled before its time limit is requeued and ends bit-identical to an uninterrupted run in one folder, a
failing run ends as failed after its retries, and a DDP run as two SLURM tasks gives one process's figures.

They need a SLURM cluster on this machine (`.ci/slurm_cluster.sh` starts a one-node one; `.ci/run` does so before the
suite). Where none is up they skip, saying so; with `CI` set they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, assert_one_process_test_figures, write_mnist

from mnist_cifar.experiments.logs import read_scalars

pytestmark = pytest.mark.cluster  # a real SLURM cluster: `pytest -m ""` or `pytest -m cluster`

EPOCHS = 2
STEPS_PER_EPOCH = 450
RUN_ARGS = {"trainer.max_epochs": EPOCHS, "data.init_args.val_size": 50, "data.init_args.batch_size": 1,
            "trainer.enable_progress_bar": False, "trainer.log_every_n_steps": 20}


def slurm_is_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    listed = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return listed.returncode == 0 and any(s.startswith(("idle", "mix", "alloc")) for s in listed.stdout.split())


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster() -> None:
    if slurm_is_up():
        return
    if os.environ.get("CI"):
        pytest.fail("CI is set but no SLURM cluster is up: .ci/run starts one with .ci/slurm_cluster.sh before the "
                    "suite; see /var/log/slurm/ for why it is down.")
    pytest.skip("no SLURM cluster is up here (sinfo finds no usable node); start a local one with "
                "`sudo .ci/slurm_cluster.sh` (Debian/Ubuntu) to run these tests.")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slurm_mnist")
    write_mnist(root, n_train=500, n_test=60)  # 450 training images, one a step: time to signal mid-epoch
    return root


def experiments(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "mnist_cifar.experiments", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def write_experiment(folder: Path, name: str, variants: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"description": "SLURM test", "config": "configs/cnn_mnist.yaml",
                                    "args": RUN_ARGS, "variants": variants}))
    return path


def wait_for(condition, seconds: float, what: str):  # noqa: ANN001, ANN201 (a small polling helper)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"waited {seconds} s for {what}")


def job_of(root: Path, experiment: str, variant: str, seed: int) -> str | None:
    path = root / "experiments" / experiment / "slurm" / "runs" / variant / f"seed{seed}.json"
    try:
        return json.loads(path.read_text()).get("job")
    except (OSError, ValueError):
        return None


def queue_states(job: str) -> list[str]:
    listed = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return listed.stdout.split()


def steps_logged(run_dir: Path) -> int:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").is_file() else []
    return max((json.loads(line).get("step") or 0 for line in lines if "train/loss_step" in line), default=0)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory, data: Path) -> dict:
    """One 2-variant × 2-seed sweep run by both backends; under SLURM, run (a, 42) gets the time-limit signal
    (SIGUSR2, as `--signal=USR2@...` sends it) in its first epoch."""
    started = time.monotonic()
    work = tmp_path_factory.mktemp("sweeps")
    spec = write_experiment(work, "tiny", {"a": {}, "b": {"args": {"model.optimizer.init_args.lr": 0.01}}})
    common = ["run", str(spec), "--seeds", "2", "--data_dir", str(data), "--num_threads=1"]
    local = experiments(*common, "--root", str(work / "local"), "--jobs", "2", cwd=work)
    print(f"local backend: {time.monotonic() - started:.0f} s")

    slurm_root = work / "slurm"
    waiting = subprocess.Popen([sys.executable, "-m", "mnist_cifar.experiments", *common, "--root", str(slurm_root),
                                "--backend", "slurm", "--wait", "--time", "10"], cwd=work, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    signalled = slurm_root / "experiments" / "tiny" / "a" / "seed42"
    job = wait_for(lambda: job_of(slurm_root, "tiny", "a", 42), 120, "run (a, 42) to be submitted")
    wait_for(lambda: steps_logged(signalled) >= 20, 180, "run (a, 42) to train")
    # scancel delivers the signal at once, but when the job is requeued under it ("Job can not be altered now")
    # it keeps retrying until the job starts again: it is not waited for. What the signal did is checked below.
    signalling = subprocess.Popen(["scancel", "--signal=USR2", job], stderr=subprocess.DEVNULL)
    # SLURM holds a requeued batch job for 120 s before it may start again; the test does not wait for that.
    wait_for(lambda: "PENDING" in queue_states(job), 120, f"job {job} to be requeued")
    print(f"requeued: {time.monotonic() - started:.0f} s")
    signalling.kill()
    signalling.wait()
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    output, _ = waiting.communicate(timeout=400)
    print(f"slurm backend: {time.monotonic() - started:.0f} s")
    assert waiting.returncode == 0, output[-4000:]
    return {"local": work / "local" / "experiments" / "tiny", "slurm": slurm_root / "experiments" / "tiny",
            "spec": spec, "work": work, "signalled": signalled, "output": output, "local_output": local.stdout}


def test_a_slurm_sweep_gives_the_local_backends_figures(sweeps: dict) -> None:
    for variant in ("a", "b"):
        for seed in (42, 43):
            here, there = (read_scalars(sweeps[side] / variant / f"seed{seed}") for side in ("local", "slurm"))
            assert there["test/acc"][-1][1] == pytest.approx(here["test/acc"][-1][1], abs=1e-7), (variant, seed)
            assert [step for step, _ in there["val/acc"]] == [step for step, _ in here["val/acc"]]
            assert [v for _, v in there["val/acc"]] == pytest.approx([v for _, v in here["val/acc"]], abs=1e-7)
    report = (sweeps["slurm"] / "results.md").read_text()
    assert "| a | 2 |" in report and "| b | 2 |" in report
    status = experiments("status", str(sweeps["spec"]), "--seeds", "2", "--root", str(sweeps["slurm"].parents[1]),
                         cwd=sweeps["work"]).stdout
    assert status.count(": done") == 4, status


def test_a_run_signalled_before_its_time_limit_is_requeued_and_ends_bit_identical(sweeps: dict) -> None:
    folder = sweeps["signalled"]
    log = (folder / "output.log").read_text()
    stop = re.search(r"stopped: SIGTERM at epoch (\d+), step (\d+)", log)  # the forwarded signal reached StopOnSignal
    assert stop is not None and int(stop[2]) % STEPS_PER_EPOCH != 0, log[-2000:]  # ... and it saved mid-epoch
    assert log.count("--- start") == 1 and log.count("--- resume") == 1  # requeued once, resumed in its folder
    state = json.loads((sweeps["slurm"] / "slurm" / "runs" / "a" / "seed42.json").read_text())
    assert state["requeues"] == 1 and state["state"] == "done"
    assert "auto-requeueing enabled" not in log  # Lightning's own requeue is off: submitit is the one owner
    mine, reference = (torch.load(side / "a" / "seed42" / "checkpoints" / "last.ckpt", weights_only=True)
                       for side in (sweeps["slurm"], sweeps["local"]))
    assert mine["global_step"] == reference["global_step"]
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(mine["state_dict"][name], tensor), name
    assert sorted(p.name for p in folder.parent.iterdir() if not p.name.startswith(".")) == ["seed42", "seed43"]


def test_a_failing_run_ends_as_failed_after_its_retries(tmp_path: Path) -> None:
    spec = write_experiment(tmp_path, "broken", {"a": {"args": {"model.optimizer.init_args.lr": -1}}})
    done = experiments("run", str(spec), "--seeds", "1", "--data_dir", str(tmp_path), "--root",
                       str(tmp_path / "logs"), "--backend", "slurm", "--wait", "--retries", "1", "--time", "5",
                       cwd=tmp_path, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed" in done.stderr and "after 2 attempt(s)" in done.stdout
    status = experiments("status", str(spec), "--seeds", "1", "--root", str(tmp_path / "logs"), cwd=tmp_path).stdout
    assert "a seed 42: failed" in status and "the learning rate must be positive" in status  # the log says why
    log = (tmp_path / "logs" / "experiments" / "broken" / "a" / "seed42" / "output.log").read_text()
    assert log.count("--- start") == 2


def test_ddp_as_two_slurm_tasks_gives_one_process_figures(data: Path, tmp_path: Path) -> None:
    lenet = str(ROOT / "configs" / "lenet_mnist.yaml")
    command = ["srun", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--kill-on-bad-exit=1", sys.executable,
               str(ROOT / "main.py"), "fit", "--config", lenet, "--data.data_dir", str(data), "--data.val_size", "50",
               "--data.batch_size", "32", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
               "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MEMBER: 2/2" in done.stdout + done.stderr  # Lightning's SLURMEnvironment: two ranks, one per task
    (run_dir,) = (tmp_path / "lightning_logs" / "lenet_mnist").iterdir()
    assert_one_process_test_figures(run_dir, data)


def test_a_sweep_run_of_two_tasks_is_one_ddp_run(data: Path, tmp_path: Path) -> None:
    spec = write_experiment(tmp_path, "wide", {"a": {"args": {"data.init_args.batch_size": 32}}})
    experiments("run", str(spec), "--seeds", "1", "--data_dir", str(data), "--root", str(tmp_path / "logs"),
                "--backend", "slurm", "--wait", "--tasks_per_node", "2", "--time", "5", "--trainer.accelerator=cpu",
                "--trainer.strategy=ddp", cwd=tmp_path)
    run_dir = tmp_path / "logs" / "experiments" / "wide" / "a" / "seed42"
    assert "MEMBER: 1/2" in (run_dir / "output.log").read_text()  # rank 0's output; rank 1 ran beside it
    assert_one_process_test_figures(run_dir, data)


def test_cancel_takes_a_submitted_sweep_off_the_queue(data: Path, tmp_path: Path) -> None:
    spec = write_experiment(tmp_path, "cancelled", {"a": {}})
    base = ["--seeds", "1", "--root", str(tmp_path / "logs")]
    experiments("run", str(spec), *base, "--data_dir", str(data), "--backend", "slurm", "--time", "5",
                "--sbatch=--begin=now+1hour", cwd=tmp_path)  # held in the queue: nothing of it runs
    assert "queued" in experiments("status", str(spec), *base, cwd=tmp_path).stdout
    assert "cancelled job(s)" in experiments("cancel", str(spec), *base, cwd=tmp_path).stdout
    assert "not in the queue" in experiments("status", str(spec), *base, cwd=tmp_path).stdout


def test_sigterm_and_requeues_from_outside(data: Path, tmp_path: Path) -> None:
    """`scontrol requeue` from outside: the task resumes its run and `status` counts the requeue; `scancel
    --signal=TERM`: the task saves, ends at once (no idle wait for a requeue that never comes) and `status` shows it
    stopped and resumable; the same `run` command then finishes it from its last.ckpt."""
    spec = write_experiment(tmp_path, "termed", {"a": {}})
    base = ["--seeds", "1", "--root", str(tmp_path / "logs")]
    submit = ["run", str(spec), *base, "--data_dir", str(data), "--backend", "slurm", "--time", "10", "--num_threads=1"]
    experiments(*submit, cwd=tmp_path)
    run_dir = tmp_path / "logs" / "experiments" / "termed" / "a" / "seed42"
    job = wait_for(lambda: job_of(tmp_path / "logs", "termed", "a", 42), 120, "the run to be submitted")
    wait_for(lambda: steps_logged(run_dir) >= 20, 180, "the run to train")
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
    wait_for(lambda: "PENDING" in queue_states(job), 120, f"job {job} to be requeued")
    status = experiments("status", str(spec), *base, cwd=tmp_path).stdout
    assert "requeued 1x, waiting" in status, status
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, timeout=60)
    wait_for(lambda: (run_dir / "output.log").read_text().count("--- resume") == 1 and "RUNNING" in queue_states(job),
             180, "the requeued task to resume the run")
    resumed_at = steps_logged(run_dir)
    wait_for(lambda: steps_logged(run_dir) >= resumed_at + 20, 180, "the resumed run to train")
    signalled = time.monotonic()
    subprocess.run(["scancel", "--signal=TERM", job], check=True, timeout=60)
    wait_for(lambda: not queue_states(job), 90, f"job {job} to end after SIGTERM")
    assert time.monotonic() - signalled < 90  # not the 120 s wait for a requeue that never comes
    status = experiments("status", str(spec), *base, cwd=tmp_path).stdout
    assert "stopped by SIGTERM" in status and "requeued 1x" in status and "resumes it" in status, status
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    experiments(*submit, "--wait", cwd=tmp_path)
    log = (run_dir / "output.log").read_text()
    assert log.count("--- start") == 1 and log.count("--- resume") == 2, log[-3000:]
    assert ": done" in experiments("status", str(spec), *base, cwd=tmp_path).stdout
