"""A plain (non-editable) install works like a tool: the wheel carries the shipped configs, installs the
`mnist-cifar` command, and runs a shipped config by its name from a folder that is not the clone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT, write_mnist


def tracked_copy(target: Path) -> Path:
    """The checkout's files as git sees them (symlinks kept), so the build writes nothing into the checkout."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=True)
    for name in listed.stdout.splitlines():
        source, copy = ROOT / name, target / name
        if not source.exists() and not source.is_symlink():
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            copy.symlink_to(source.readlink())
        else:
            shutil.copy2(source, copy)
    return target


@pytest.mark.slow
def test_a_plain_install_runs_a_shipped_config_by_name_from_any_folder(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to list the files to build from")
    source = tracked_copy(tmp_path / "source")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("mnist_cifar-*.whl")
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert (site / "mnist_cifar" / "configs" / "lenet_mnist.yaml").is_file()
    assert (site / "mnist_cifar" / "configs" / "experiments").is_dir()
    (entry_points,) = site.glob("mnist_cifar-*.dist-info/entry_points.txt")
    assert "mnist-cifar = mnist_cifar.__main__:main" in entry_points.read_text()

    elsewhere = tmp_path / "elsewhere"
    write_mnist(elsewhere / "mnist")
    # -S: no site-packages processing, so the checkout's editable install cannot answer for `mnist_cifar`; the
    # dependencies come from this environment's site-packages, the package from the plain install only.
    env = {"PYTHONPATH": f"{site}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def tool(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-S", "-m", "mnist_cifar", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=300)

    where = subprocess.run([sys.executable, "-S", "-c", "import mnist_cifar; print(mnist_cifar.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    fitted = tool("fit", "--config", "lenet_mnist", "--data.data_dir", "mnist", "--data.val_size", "50",
                  "--trainer.fast_dev_run", "true",
                  "--trainer.enable_progress_bar", "false")
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    listed = tool("experiments", "list")
    assert listed.returncode == 0 and "augmentation" in listed.stdout, listed.stdout + listed.stderr[-2000:]


def test_a_shipped_config_is_found_by_its_name_unless_a_file_of_that_name_exists(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from mnist_cifar.__main__ import CONFIGS, with_shipped_configs

    assert with_shipped_configs(["fit", "--config", "lenet_mnist"]) == ["fit", "--config", str(CONFIGS / "lenet_mnist.yaml")]
    assert with_shipped_configs(["fit", "--config=speedrun_cifar.yaml"]) == [
        "fit", f"--config={CONFIGS / 'speedrun_cifar.yaml'}"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lenet_mnist").write_text("trainer: {}\n")  # the user's own file wins over the shipped name
    assert with_shipped_configs(["fit", "--config", "lenet_mnist"]) == ["fit", "--config", "lenet_mnist"]
    assert with_shipped_configs(["fit", "--config", "no_such_config"]) == ["fit", "--config", "no_such_config"]
