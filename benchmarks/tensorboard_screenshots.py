"""Screenshots of TensorBoard as a person sees it: a `lenet_cifar` fit and a `test --ckpt_path` of its best checkpoint,
then TensorBoard on that folder, and headless Chromium (Debian's `chromium`) taking one PNG per tab.

Not part of the test suite (it needs a browser); `tests/test_callbacks.py` checks the same facts on the event
files. By default the run is tiny (a CIFAR-10 copy in the real on-disk format written by the tests' own writer,
a few epochs), so the pictures show the layout, not a result; `--data_dir` trains on a real copy instead, and
`--logdir` photographs an existing folder without training.

    python benchmarks/tensorboard_screenshots.py --out docs/tensorboard [--data_dir DIR] [--logdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABS = {"timeseries": "time_series", "scalars": "scalars", "hparams": "hparams", "images": "images"}


def train(logdir: Path, data_dir: Path | None, epochs: int) -> None:
    if data_dir is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import write_cifar_batches

        data_dir = logdir.parent / "cifar"
        write_cifar_batches(data_dir, per_batch=200, n_test=200)
        tiny = ["--data.val_size", "200"]
    else:
        tiny = []
    config = str(ROOT / "configs" / "lenet_cifar.yaml")
    common = ["--data.data_dir", str(data_dir), "--trainer.enable_progress_bar", "false", "--num_threads", "1"]
    subprocess.run([sys.executable, str(ROOT / "main.py"), "fit", "--config", config, *common, *tiny,
                    "--trainer.max_epochs", str(epochs), "--trainer.log_every_n_steps", "5",
                    "--trainer.logger.init_args.save_dir", str(logdir)], check=True, cwd=logdir.parent)
    best = next((logdir / "lenet_cifar" / "version_0" / "checkpoints").glob("epoch*.ckpt"))
    subprocess.run([sys.executable, str(ROOT / "main.py"), "test", "--ckpt_path", str(best), *common],
                   check=True, cwd=logdir.parent)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def screenshot(browser: str, url: str, target: Path, wait_ms: int) -> None:
    subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1600,1100", f"--virtual-time-budget={wait_ms}", f"--screenshot={target}", url],
                   check=True, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "tensorboard")
    parser.add_argument("--data_dir", type=Path, help="train on this copy of CIFAR-10 instead of a tiny one")
    parser.add_argument("--logdir", type=Path, help="photograph this folder; nothing is trained")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--wait_ms", type=int, default=20000, help="how long the page may load before the shot")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("No chromium on the PATH: apt-get install chromium (Debian), then run this again.")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        logdir = args.logdir or Path(tmp) / "lightning_logs"
        if args.logdir is None:
            logdir.mkdir()
            train(logdir, args.data_dir, args.epochs)
        port = free_port()
        board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
                                  "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(f"http://127.0.0.1:{port}/data/runs")
            time.sleep(5)  # the first reload of the event files
            for route, name in TABS.items():
                target = args.out / f"{name}.png"
                screenshot(browser, f"http://127.0.0.1:{port}/#{route}", target, args.wait_ms)
                print(f"wrote {target}")
        finally:
            board.terminate()
            board.wait(timeout=30)


if __name__ == "__main__":
    main()
