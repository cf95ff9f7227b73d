"""A local Ray's folder is private to the user, and nothing of a session outlives its driver, even a driver
killed with SIGKILL: its Ray processes end within seconds and its folder is removed (by the watchdog, else by
the next start).

The drivers run as subprocesses with their own short TMPDIR, so these tests never see other sessions' folders;
run them through tests/isolated.sh (loopback only), as `make test` does.
"""

import json
import os
import select
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agents import ray_session

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
DRIVER = textwrap.dedent(
    """
    import os, time
    from agents import runtime
    ray = runtime.start(runtime.RuntimeConfig(num_cpus=1))
    @ray.remote
    def pid():
        return os.getpid()
    print(runtime.session_dir(), ray.get(pid.remote(), timeout=60), flush=True)  # a worker runs too
    time.sleep(300)
    """
)


@pytest.fixture
def short_tmp():
    """A private temp dir with a short path: Ray's unix sockets live under it (at most 107 characters)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_driver(tmp: Path, timeout: float = 90.0) -> tuple[subprocess.Popen, Path]:
    """A driver that started a local Ray and ran a task; returns it and its session folder."""
    env = os.environ | {"TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([driver.stdout], [], [], timeout)
    line = driver.stdout.readline() if ready else ""
    if not line:
        driver.kill()
        driver.wait()
        pytest.fail(f"the driver did not start Ray within {timeout} s")
    return driver, Path(line.split()[0])


def alive(processes) -> list:
    living = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                living.append(process)
        except psutil.NoSuchProcess:
            pass
    return living


def describe(processes) -> list[str]:
    names = []
    for process in processes:
        try:
            names.append(f"{process.pid} {process.name()}")
        except psutil.NoSuchProcess:
            pass
    return names


def test_a_killed_drivers_ray_processes_end_and_its_private_folder_is_removed(short_tmp):
    driver, folder = start_driver(short_tmp)
    try:
        assert folder.parent == short_tmp and folder.name.startswith(ray_session.PREFIX)
        info = folder.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
        assert (folder / "ray" / "session_latest").exists()  # Ray's temp dir (which Ray makes 0777) is inside
        assert json.loads((folder / ray_session.OWNER_FILE).read_text())["pid"] == driver.pid
        session = psutil.Process(driver.pid).children(recursive=True)
        names = " ".join(describe(session))
        for name in ("raylet", "gcs_server", "ray::DashboardAgent", "ray::RuntimeEnvAgent"):
            assert name in names, names
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    killed = time.monotonic()
    while (alive(session) or folder.exists()) and time.monotonic() - killed < 15:
        time.sleep(0.1)
    left = describe(alive(session))
    assert not left, f"still running {time.monotonic() - killed:.0f} s after the driver's SIGKILL: {left}"
    assert not folder.exists()


def test_the_next_start_removes_a_dead_sessions_folder(short_tmp):
    """A session whose watchdog died too (say the whole process group was killed) is cleaned up by the next
    local start: its leftover Ray processes end and its folder goes; a live session is left alone."""
    live, live_folder = start_driver(short_tmp)
    stale, stale_folder = start_driver(short_tmp)
    drivers = [live, stale]
    try:
        leftover = psutil.Process(stale.pid).children(recursive=True)
        (watchdog,) = [p for p in leftover if "--watch" in p.cmdline()]
        watchdog.kill()  # a zombie of the driver's from now on
        stale.send_signal(signal.SIGKILL)
        stale.wait()
        time.sleep(1.0)
        assert stale_folder.exists() and alive(leftover)  # nobody cleaned up (the agents linger for a minute)
        following, following_folder = start_driver(short_tmp)  # the next start
        drivers.append(following)
        assert not stale_folder.exists()
        assert not alive(leftover), describe(alive(leftover))
        assert live_folder.exists() and live.poll() is None and following_folder.exists()
    finally:
        for driver in drivers:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
    deadline = time.monotonic() + 15
    while (live_folder.exists() or following_folder.exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not live_folder.exists() and not following_folder.exists()


def test_folders_are_judged_by_their_owner_and_by_who_uses_them(tmp_path):
    """No Ray needed: a dead owner's folder goes (with the Ray-named process left in it, but not another
    program); an unowned one goes only when old and unused; a live owner's folder and a fresh one stay."""

    def folder(name, owner=None, age=0.0):
        path = tmp_path / (ray_session.PREFIX + name)
        path.mkdir(mode=0o700)
        if owner is not None:
            (path / ray_session.OWNER_FILE).write_text(json.dumps(owner))
        os.utime(path, (time.time() - age, time.time() - age))
        return path

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = folder("dead", ray_session.identity(os.getpid()) | {"pid": gone.pid})
    mine = folder("mine", ray_session.identity(os.getpid()))
    fresh = folder("fresh")
    unused = folder("unused", age=3600)
    used = folder("used", age=3600)
    children = [
        subprocess.Popen(["bash", "-c", 'exec -a "ray::Leftover" sleep 60'], cwd=dead),
        subprocess.Popen(["sleep", "60"], cwd=dead),  # not Ray's: a driver that had joined, say
        subprocess.Popen(["sleep", "60"], cwd=used),
    ]
    try:
        time.sleep(0.3)  # the exec has happened
        removed = ray_session.clean_stale_folders(tmp_path, ray_dir="/nonexistent/ray")
        assert sorted(removed) == sorted([dead, unused])
        assert mine.exists() and fresh.exists() and used.exists()
        assert children[0].wait(10) is not None  # ended
        assert children[1].poll() is None and children[2].poll() is None  # left alone
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_a_cluster_is_joined_by_the_configs_address_else_by_ray_address(monkeypatch):
    from agents import runtime

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert runtime.cluster_address(runtime.RuntimeConfig()) is None  # a private local Ray
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert runtime.cluster_address(runtime.RuntimeConfig()) == "10.0.0.5:6379"
    assert runtime.cluster_address(runtime.RuntimeConfig(address="10.0.0.6:6379")) == "10.0.0.6:6379"
    monkeypatch.setenv("RAY_ADDRESS", "")
    assert runtime.cluster_address(None) is None
