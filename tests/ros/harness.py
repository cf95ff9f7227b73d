"""The harness behind tests/ros: a private rclpy context whose nodes each spin on their own thread with
their own SingleThreadedExecutor (as ``ros_nodes.spin`` does in a process), a probe node that records topics,
and polling helpers. Imported only once conftest.py has set the ROS environment."""

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String

from ros_nodes.qos import LATCHED, STREAM

ROOT = Path(__file__).resolve().parents[2]
# what a test that runs a task listens to: the bridge's task and verdict, the plan, the controller's progress
TASK_TOPICS = {
    "task": (String, "task", LATCHED, "json"),
    "plan": (String, "plan", LATCHED, "json"),
    "status": (String, "controller/status", LATCHED, "json"),
    "task_status": (String, "task/status", STREAM, "json"),
}

# What /rosout publishes with (transient local, reliable): a subscriber that also sees earlier lines.
ROSOUT_QOS = QoSProfile(depth=1000, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


def embodied_command() -> list[str]:
    script = Path(sys.executable).with_name("embodied")
    return [str(script)] if script.exists() else [sys.executable, "-m", "embodied.cli"]


def start_ros_up(tmp_path: Path, *settings: str):
    """`embodied ros up sim --set SETTING...` in the background, its output in ``tmp_path/up.log``; returns
    the process and the open log, which the caller closes once it has stopped the process."""
    log = (tmp_path / "up.log").open("w")
    args = [*embodied_command(), "ros", "up", "sim", "--log-dir", str(tmp_path / "logs")]
    for setting in settings:
        args += ["--set", setting]
    return subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log


def interrupt(process, timeout: float = 30.0) -> tuple[int, float]:
    """SIGINT (what Ctrl-C sends) to a node's process; its exit code and the seconds it took to exit. One
    that is still running after ``timeout`` is killed (the code is then -9)."""
    stopping = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # a hung node must not outlive its test
        process.kill()
        code = process.wait()
    return code, time.monotonic() - stopping


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns its last truth."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class Recorder:
    """Every message a subscription received, with the monotonic time it arrived."""

    def __init__(self, decode=None):
        self.decode = decode
        self.lock = threading.Lock()
        self.items: list[tuple[float, object]] = []

    def __call__(self, msg) -> None:
        value = self.decode(msg) if self.decode else msg
        with self.lock:
            self.items.append((time.monotonic(), value))

    @property
    def messages(self) -> list:
        with self.lock:
            return [v for _, v in self.items]

    def since(self, t: float) -> list:
        with self.lock:
            return [v for when, v in self.items if when >= t]

    @property
    def last(self):
        with self.lock:
            return self.items[-1][1] if self.items else None

    def __len__(self) -> int:
        with self.lock:
            return len(self.items)

    def wait(self, predicate=lambda msg: True, timeout: float = 10.0, since: float = -1.0):
        """The first message (arrived after ``since``) that satisfies ``predicate``, or None."""
        found = []

        def check():
            found[:] = [m for m in self.since(since) if predicate(m)][:1]
            return bool(found)

        wait_for(check, timeout)
        return found[0] if found else None

    def wait_last(self, predicate, timeout: float = 10.0):
        """Wait until the newest message satisfies ``predicate``; returns it, or None."""
        ok = wait_for(lambda: self.last is not None and predicate(self.last), timeout)
        return self.last if ok else None


class Probe(Node):
    """A test node that records topics, publishes and calls services.

    Everything is created in the constructor (on the probe's own spin thread): ``topics`` maps a key to
    ``(type, topic, qos)`` or ``(type, topic, qos, "json")`` (String data decoded as JSON) and fills
    ``rec[key]``; ``publishers`` maps a key to ``(type, topic, qos)``; ``services`` to ``(type, name)``."""

    def __init__(self, name: str = "probe", topics=None, publishers=None, services=None, **options):
        super().__init__(name, **options)
        self.rec: dict[str, Recorder] = {}
        self.pub: dict[str, object] = {}
        self.cli: dict[str, object] = {}
        for key, (msg_type, topic, qos, *decode) in (topics or {}).items():
            recorder = Recorder((lambda m: json.loads(m.data)) if decode == ["json"] else None)
            self.create_subscription(msg_type, topic, recorder, qos)
            self.rec[key] = recorder
        for key, (msg_type, topic, qos) in (publishers or {}).items():
            self.pub[key] = self.create_publisher(msg_type, topic, qos)
        for key, (srv_type, name) in (services or {}).items():
            self.cli[key] = self.create_client(srv_type, name)

    def publish(self, key: str, msg) -> None:
        self.pub[key].publish(msg)

    def call(self, key: str, request, timeout: float = 10.0):
        """Call a service from the test thread (the probe's own thread spins the response in)."""
        client = self.cli[key]
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} is not available"
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f"no response from {client.srv_name} in {timeout} s"
        return future.result()


class NodeThread:
    """One node built, spun and destroyed on its own thread with its own SingleThreadedExecutor."""

    def __init__(self, factory, context):
        self.factory, self.context = factory, context
        self.node = self.name = None
        self.error: BaseException | None = None  # a constructor or callback that raised
        self.ready, self.stop = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            node = self.factory()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc
            self.ready.set()
            return
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        self.node, self.name = node, node.get_name()
        self.ready.set()
        try:
            while not self.stop.is_set() and self.context.ok():
                executor.spin_once(timeout_sec=0.05)
        except BaseException as exc:  # noqa: BLE001 - a callback raised: the node is dead, as its process would be
            self.error = exc
        finally:
            executor.shutdown(timeout_sec=5.0)
            node.destroy_node()

    def close(self, timeout: float = 10.0) -> None:
        self.stop.set()
        self.thread.join(timeout)


class RosHarness:
    """A private rclpy context, and the nodes of one test, each spun on its own thread."""

    def __init__(self):
        self.context = Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.threads: list[NodeThread] = []

    def start(self, node_class, *args, timeout: float = 120.0, **options):
        """Construct ``node_class(*args, context=..., **options)`` on a new spin thread; returns the node."""
        options.setdefault("context", self.context)
        runner = NodeThread(lambda: node_class(*args, **options), self.context)
        self.threads.append(runner)
        assert runner.ready.wait(timeout), f"{node_class.__name__} did not start in {timeout} s"
        if runner.error is not None:
            raise runner.error
        return runner.node

    def probe(self, name: str = "probe", topics=None, publishers=None, services=None) -> Probe:
        return self.start(Probe, name, topics, publishers, services)

    def thread_of(self, node) -> NodeThread:
        return next(t for t in self.threads if t.node is node)

    def assert_alive(self) -> None:
        """No node's constructor or callback has raised, and every spin thread still runs."""
        for t in self.threads:
            assert t.error is None, f"node {t.name} died: {t.error!r}"
            assert t.thread.is_alive(), f"the spin thread of {t.name} has ended"

    def close(self) -> None:
        for t in reversed(self.threads):
            t.close()
        rclpy.try_shutdown(context=self.context)
