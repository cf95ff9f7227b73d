"""The private folder a local Ray session lives in, and its watchdog.

A local Ray keeps its files in a folder private to the user, ``$TMPDIR/embodied_ray_*`` (mode 0700), which
records the driver's pid and which ``end_session()`` (called by ``runtime.shutdown()``) removes. Ray's own
temp dir sits inside it, in ``ray/``: Ray makes that one world-writable (0777), again each time a worker
process starts, so only the folder around it can keep it private. A small watchdog process (this file run as a script, standard library only)
waits for the driver to end: if it ends without ``shutdown()``, even by SIGKILL, the watchdog ends the Ray
processes of its session at once (Ray's dashboard and runtime-env agents would otherwise live on for a minute)
and removes the folder. ``runtime.start()`` also removes folders of dead sessions of this user that were left anyway
(a killed watchdog), never one whose driver is alive or that a process still uses.

Everything here runs on /proc (Linux); elsewhere folders are removed by ``end_session()`` only, and nothing is
judged stale.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "embodied_ray_"  # the session folders, in tempfile.gettempdir()
OWNER_FILE = "owner.json"  # the driver that owns a folder: pid, start time, pid namespace
UNOWNED_GRACE_S = 60.0  # a folder without an owner record this young may be starting up: left alone


@dataclass
class _Session:
    folder: Path
    ray_dir: str  # Ray's package folder: its processes run from there (or are named "ray::...")
    watchdog: subprocess.Popen | None


_session: _Session | None = None


def start_session(ray_dir: str) -> Path:
    """A new private folder for this process's local Ray, watched."""
    global _session
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))  # mode 0700, owned by this user
    (folder / OWNER_FILE).write_text(json.dumps(identity(os.getpid())))
    watchdog = None
    if os.path.exists("/proc/self/stat"):
        watchdog = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), "--watch", str(folder), str(os.getpid()), ray_dir],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # no pipe of the driver's stays open after it dies
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the driver's process group leaves it to clean up
        )
    _session = _Session(folder, ray_dir, watchdog)
    return folder


def session_folder() -> Path | None:
    return _session.folder if _session is not None else None


def end_session() -> None:
    """End the Ray processes still using this process's folder, remove it, then stop the watchdog."""
    global _session
    session, _session = _session, None
    if session is None:
        return
    end_processes(session.folder, session.ray_dir)
    if session.watchdog is not None:
        session.watchdog.kill()
        session.watchdog.wait()


def end_processes(folder: Path, ray_dir: str, grace: float = 1.0, remove: bool = True) -> None:
    """End the Ray processes using ``folder`` (SIGKILL at once when ``grace`` is 0), then remove it."""
    users = _users([str(folder)])[str(folder)]
    _terminate([pid for pid, args in users.items() if _is_ray_process(args, ray_dir)], grace)
    if remove:
        shutil.rmtree(folder, ignore_errors=True)


def clean_stale_folders(root: str | Path | None = None, ray_dir: str | None = None) -> list[Path]:
    """Remove this user's session folders in ``root`` (the temp dir) whose driver has died, ending Ray's
    processes still in them; a folder without an owner record (older code, or one starting up) only when it is
    over a minute old and no process uses it. Returns the folders removed."""
    if not os.path.exists("/proc/self/stat"):
        return []
    root = Path(root or tempfile.gettempdir())
    candidates = []
    for folder in root.glob(PREFIX + "*"):
        try:
            info = folder.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        try:
            owner = json.loads((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = None
        if owner is None and time.time() - info.st_mtime < UNOWNED_GRACE_S:
            continue
        if owner is not None and _owner_alive(owner):
            continue
        candidates.append((folder, owner is not None))
    users = _users([str(folder) for folder, _ in candidates]) if candidates else {}
    removed = []
    for folder, owned in candidates:
        using = users[str(folder)]
        if not owned and using:  # no record of its driver: someone may still use it
            continue
        _terminate([pid for pid, args in using.items() if ray_dir and _is_ray_process(args, ray_dir)], 1.0)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def identity(pid: int) -> dict:
    return {"pid": pid, "start": _start_time(pid), "pidns": _pid_namespace()}


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22: start time in clock ticks since boot


def _running(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _owner_alive(owner: dict) -> bool:
    if owner.get("pidns") != _pid_namespace() or owner.get("start") is None:
        return True  # another pid namespace (a container sharing the temp dir): cannot tell, so leave it
    pid = int(owner["pid"])
    return _running(pid) and _start_time(pid) == owner["start"]


def _users(folders: list[str]) -> dict[str, dict[int, list[str]]]:
    """For each folder, the processes of this user (pid -> command line) that name a path in it in their
    command line or have a file in it open or as their working directory."""
    found: dict[str, dict[int, list[str]]] = {folder: {} for folder in folders}
    me, uid = os.getpid(), os.getuid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        base = f"/proc/{name}"
        try:
            if os.stat(base).st_uid != uid:
                continue
            with open(f"{base}/cmdline", "rb") as file:
                args = file.read().decode(errors="replace").split("\0")
            fds = os.listdir(f"{base}/fd")
        except OSError:
            continue
        paths = list(args)
        for entry in [f"fd/{fd}" for fd in fds] + ["cwd"]:
            try:
                paths.append(os.readlink(f"{base}/{entry}"))
            except OSError:
                pass
        for folder in folders:
            inside = folder + os.sep
            if any(path == folder or inside in path for path in paths):
                found[folder][int(name)] = args
    return found


def _is_ray_process(args: list[str], ray_dir: str) -> bool:
    """Ray's own processes (GCS, raylet, agents, monitors, workers), never a driver that joined the session."""
    inside = ray_dir + os.sep
    return bool(args) and (args[0].startswith("ray::") or any(arg.startswith(inside) for arg in args[:3]))


def _terminate(pids: list[int], grace: float) -> None:
    """SIGTERM, then SIGKILL for what is left after ``grace`` seconds (0: SIGKILL only); returns once all are
    gone (or 5 s).
    Signals go through pidfds where there are any, so a pid reused meanwhile is never hit."""
    handles = {}
    for pid in pids:
        try:
            handles[pid] = os.pidfd_open(pid)
        except AttributeError:
            handles[pid] = None
        except OSError:
            continue  # gone already

    def running(pid: int) -> bool:
        if handles[pid] is None:
            return _running(pid)
        return not select.select([handles[pid]], [], [], 0)[0]  # a pidfd is readable once its process exited

    left = list(handles)
    try:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0))[0 if grace > 0 else 1 :]:
            for pid in left:
                try:
                    if handles[pid] is None:
                        os.kill(pid, sig)
                    else:
                        signal.pidfd_send_signal(handles[pid], sig)
                except OSError:
                    pass
            deadline = time.monotonic() + wait
            while left and time.monotonic() < deadline:
                time.sleep(0.05)
                left = [pid for pid in left if running(pid)]
            if not left:
                return
    finally:
        for handle in handles.values():
            if handle is not None:
                os.close(handle)


def _watch(folder: str, pid: int, ray_dir: str) -> None:
    """The watchdog: wait for the driver ``pid`` to end, then end its session."""
    start = _start_time(pid)
    try:
        handle = os.pidfd_open(pid)  # readable once the process has exited
    except (AttributeError, OSError):
        while _running(pid) and _start_time(pid) == start:
            time.sleep(0.5)
    else:
        select.select([handle], [], [])
    if os.path.isdir(folder):
        end_processes(Path(folder), ray_dir)


if __name__ == "__main__" and sys.argv[1:2] == ["--watch"]:
    _watch(sys.argv[2], int(sys.argv[3]), sys.argv[4])
