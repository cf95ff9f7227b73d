"""ROS 2 test setup: discovery kept on this host in a domain of this process's own, and a harness that runs
each node on its own thread with its own single-threaded executor (as ``ros_nodes.spin`` does in a
process: the sim bridge's GL context belongs to the thread that spins it).

Run the folder inside a private network namespace::

    unshare -n sh -c 'ip link set lo up; ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=7 \
        ROS_LOG_DIR=/tmp/roslog .venv/bin/python -m pytest -q tests/ros -p no:cacheprovider'
"""

import os
import tempfile

# Before anything imports rclpy (the DDS participant reads these when a context starts).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
if "ROS_LOG_DIR" not in os.environ:
    os.environ["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="embodied_roslog_")
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402

ROS_MISSING = None
try:
    # exc_type=ImportError: a wheel whose native libraries fail to load skips too, not only a missing one.
    _reason = "rclpy is not importable: install the ROS 2 wheels (pip install -e '.[ros]')"
    pytest.importorskip("rclpy", reason=_reason, exc_type=ImportError)
    for _package in ("std_msgs", "geometry_msgs", "sensor_msgs", "nav_msgs", "trajectory_msgs", "visualization_msgs"):
        _reason = f"the ROS 2 message package {_package} is not importable"
        pytest.importorskip(_package, reason=_reason, exc_type=ImportError)
    pytest.importorskip("std_srvs", reason="the ROS 2 package std_srvs is not importable", exc_type=ImportError)
except pytest.skip.Exception as _exc:  # raising here would abort `pytest tests/ros`: skip each module instead
    ROS_MISSING = str(_exc.msg)


def pytest_configure(config):
    config.addinivalue_line("markers", "ros: ROS 2 node tests (rclpy; run inside a private network namespace)")


if ROS_MISSING is not None:

    class _SkippedModule(pytest.Module):
        def collect(self):
            pytest.skip(ROS_MISSING, allow_module_level=True)

    def pytest_pycollect_makemodule(module_path, parent):
        return _SkippedModule.from_parent(parent, path=module_path)

else:
    from .harness import RosHarness

    @pytest.fixture
    def ros():
        """A ``RosHarness``: ``ros.start(NodeClass, parameter_overrides=[...])``, ``ros.probe(...)``; every node
        is stopped and the context shut down after the test."""
        harness = RosHarness()
        try:
            yield harness
        finally:
            harness.close()

    @pytest.fixture
    def torch_threads():
        """For tests that start a model planner: its ``threads`` parameter calls torch.set_num_threads, which is
        process-wide here (the node runs in the test process); put the count back afterwards."""
        torch = pytest.importorskip("torch")
        before = torch.get_num_threads()
        yield
        torch.set_num_threads(before)
