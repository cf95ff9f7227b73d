"""Recordings: episodes (``embodied rollout --record``) and the running graph (``record:=true``) as MCAP files
that the ``mcap`` reader and ``mcap-ros2-support``'s decoder read back whole, one message per topic per step,
in time order; and files that were cut short or damaged, which read up to the damage and then fail in one
line."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from PIL import Image
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image as RosImage
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from embodied.cli import main
from embodied.rollout import run_episode
from envs.env import EmbodiedEnv
from envs.planners import OraclePlanner
from ros_nodes.conversions import image_array
from ros_nodes.episode_recording import EpisodeRecording
from ros_nodes.recorder import Recorder
from ros_nodes.recording import RecordingError, message_definition, read_messages
from ros_nodes.replay import load
from ros_nodes.sim_bridge import SimBridge

from .harness import wait_for

pytestmark = pytest.mark.ros

SEED = 3  # pick_place: the red cube into the orange bin
CAMERA = ("/camera/image", "/camera/depth", "/camera/camera_info")
WORLD = ("/objects", "/grasped", "/scene", "/map")


def params(**values) -> list[Parameter]:
    return [Parameter(name, value=value) for name, value in values.items()]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One perceived pick-and-place episode of the oracle, recorded through the command line."""
    out = tmp_path_factory.mktemp("rollout")
    argv = ["rollout", "--policy", "oracle", "--world", "perceived", "--seed", str(SEED), "--episodes", "1"]
    assert main([*argv, "--gifs", "0", "--record", "--quiet", "--out", str(out)]) == 0
    record = json.loads((out / "episodes" / "episode_0000.json").read_text())
    return out / "recordings" / "episode_0000.mcap", record


def test_a_recorded_episode_decodes_whole_with_the_state_every_step_and_the_world_when_it_changes(recorded):
    path, record = recorded
    assert record["success"]
    counts, stamps, last = {}, [], {}
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        assert summary is not None and summary.statistics.message_count > 0, "no summary: the file was not finished"
        for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=False):
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            stamps.append(message.log_time)
            last[channel.topic] = decoded
            if hasattr(decoded, "header"):  # a stamped message carries the simulated time it was recorded at
                assert decoded.header.stamp.sec * 10**9 + decoded.header.stamp.nanosec == message.log_time
    assert stamps == sorted(stamps), "timestamps go back in time"
    assert summary.statistics.message_count == sum(counts.values())
    steps = record["env_steps"]
    # the start, every control step, and the step that ends the episode
    assert counts["/odom"] == counts["/joint_states"] == steps + 2, counts
    assert counts["/cmd_vel"] == steps + 1, counts
    # state written when it changes: the hold (at the start, at the grasp, at the release), the joint targets
    assert counts["/gripper/holding"] == 3 and 10 < counts["/arm_command"] < steps, counts
    frames = counts["/camera/depth"]
    assert steps // 3 < frames < steps and all(counts[t] == frames for t in CAMERA), counts
    assert all(1 <= counts[t] < frames for t in WORLD), counts  # perception's world, when it changed
    assert counts["/task"] == counts["/instruction"] == counts["/plan"] == 1
    assert json.loads(last["/plan"].data)["plan"] == record["plan"]
    assert json.loads(last["/task/status"].data)["success"] is True
    assert last["/camera/image"].encoding == "rgb8" and last["/camera/depth"].encoding == "32FC1"
    assert {m.ns for m in last["/objects"].markers} >= {"red cube", "orange bin"}


def test_a_privileged_episode_records_the_policys_camera_and_only_the_objects_that_moved(tmp_path):
    env = EmbodiedEnv(task="pick_place", sensors=("rgb", "depth", "points"))
    recording = EpisodeRecording(env, tmp_path / "privileged.mcap", "oracle")
    try:
        record, _ = run_episode(env, OraclePlanner(), SEED, recording=recording)
    finally:
        recording.close()
        env.close()
    assert record["success"]
    messages = list(read_messages(tmp_path / "privileged.mcap"))
    count = lambda topic: sum(m.topic == topic for m in messages)
    steps = record["env_steps"]
    assert abs(count("/camera/image") - steps / 3) <= 2 and count("/camera/points") == count("/camera/image")
    markers = [deserialize_message(m.data, MarkerArray).markers for m in messages if m.topic == "/objects"]
    names = set(env.scene.object_names)
    assert {m.ns for m in markers[0]} == names  # every object at the start, then what moved
    assert {m.ns for ms in markers[1:] for m in ms} == {"red cube"} and len(markers) > 10
    assert [deserialize_message(m.data, String).data for m in messages if m.topic == "/grasped"] == ["", "red cube", ""]


def test_the_schemas_carry_every_type_they_use():
    text = message_definition("visualization_msgs/msg/MarkerArray")
    for used in ("visualization_msgs/Marker", "std_msgs/Header", "geometry_msgs/Pose", "builtin_interfaces/Time"):
        assert f"\nMSG: {used}\n" in text
    assert text.count("MSG: std_msgs/Header") == 1


def test_a_file_cut_short_reads_up_to_the_cut_then_fails_in_one_line_naming_file_and_offset(recorded, tmp_path, capsys):
    path, _ = recorded
    data = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) // 2])
    read = []
    with pytest.raises(RecordingError, match=r"cut\.mcap: unreadable from byte \d+ of \d+: it ends before its footer"):
        read.extend(read_messages(cut))
    assert 0 < len(read) < sum(1 for _ in read_messages(path))
    warnings = []
    assert load(cut, salvage=True, warn=warnings.append) == read  # --salvage replays what comes before the cut
    assert len(warnings) == 1 and f"replaying the {len(read)} messages before it" in warnings[0]
    assert main(["replay", str(cut)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and str(cut) in error and "unreadable from byte" in error, error

    damaged = tmp_path / "damaged.mcap"
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    damaged.write_bytes(bytes(flipped))
    with pytest.raises(RecordingError, match=r"damaged\.mcap: unreadable from byte \d+ of \d+: \w+"):
        list(read_messages(damaged))
    junk = tmp_path / "junk.mcap"
    junk.write_text("not a recording")
    with pytest.raises(RecordingError, match="from byte 0 .*magic"):
        list(read_messages(junk))
    with pytest.raises(RecordingError, match="no such recording"):
        list(read_messages(tmp_path / "missing.mcap"))


def test_replay_lists_topics_refuses_topics_the_recording_lacks_and_publishes_the_rest(recorded, capsys):
    path, _ = recorded
    assert main(["replay", str(path), "--info"]) == 0
    table = capsys.readouterr().out
    assert "/camera/depth" in table and "sensor_msgs/msg/Image" in table
    assert main(["replay", str(path), "--topics", "camera/thermal", "--quiet"]) == 2
    assert "has no /camera/thermal" in capsys.readouterr().err
    assert main(["replay", str(path), "--rate", "0", "--quiet"]) == 2
    assert "rate must be positive, got 0.0" in capsys.readouterr().err
    odom = sum(m.topic == "/odom" for m in read_messages(path))
    assert main(["replay", str(path), "--topics", "odom", "task", "--rate", "100", "--delay", "0.1", "--quiet"]) == 0
    assert f"published {odom + 1} messages on 2 topics" in capsys.readouterr().out


@pytest.mark.timeout(120)
def test_a_recording_killed_mid_episode_keeps_every_chunk_written_before(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "embodied.cli", "rollout", "--policy", "oracle", "--world", "perceived",
               "--seed", str(SEED), "--episodes", "1", "--gifs", "0", "--record", "--quiet", "--out", str(out)]  # fmt: skip
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    path = out / "recordings" / "episode_0000.mcap"
    deadline = time.monotonic() + 90
    while not (path.is_file() and path.stat().st_size > 4_000_000) and time.monotonic() < deadline:
        assert process.poll() is None, "the rollout ended before it had written 4 MB"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    read = []
    with pytest.raises(RecordingError, match="ends before its footer"):
        read.extend(read_messages(path))
    topics = {m.topic for m in read}
    assert {"/task", "/odom", "/camera/image"} <= topics and len(read) > 100


@pytest.mark.timeout(120)
def test_the_graph_recorder_writes_the_topics_it_hears_latched_ones_from_before_it_started(ros, tmp_path):
    bridge = ros.start(SimBridge, parameter_overrides=params(task="pick_place", seed=SEED, width=64, height=64))
    path = tmp_path / "graph.mcap"
    recorder = ros.start(Recorder, parameter_overrides=params(record_path=str(path)))
    wanted = ("/camera/image", "/camera/depth", "/odom", "/joint_states", "/objects", "/task", "/scene")
    assert wait_for(lambda: all(recorder.out.counts.get(t, 0) >= 3 for t in wanted[:-2]), 60), recorder.out.counts
    assert wait_for(lambda: all(recorder.out.counts.get(t, 0) >= 1 for t in wanted[-2:]), 10), recorder.out.counts
    ros.assert_alive()
    ros.thread_of(recorder).close()  # the node stops: the file is finished
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        decoded = {}
        for _, channel, message, msg in reader.iter_decoded_messages(log_time_order=False):
            decoded.setdefault(channel.topic, []).append((message.log_time, msg))
    assert set(wanted) <= set(decoded), sorted(decoded)
    for topic, messages in decoded.items():
        times = [t for t, _ in messages]
        assert times == sorted(times), f"{topic}: timestamps go back in time"
    assert json.loads(decoded["/task"][0][1].data)["seed"] == SEED  # latched: published before the recorder began
    image = decoded["/camera/image"][-1][1]
    assert (image.width, image.height, image.encoding) == (64, 64, "rgb8")
    assert bridge.env.unwrapped.scene.object_names == [m.ns for m in decoded["/objects"][-1][1].markers]


def test_a_snapshot_draws_the_frame_with_perceptions_objects_and_the_map(recorded, tmp_path):
    path, _ = recorded
    png = tmp_path / "snapshot.png"
    assert main(["replay", str(path), "--snapshot", str(png)]) == 0
    picture = np.asarray(Image.open(png))
    last = [m for m in read_messages(path) if m.topic == "/camera/image"][-1]
    frame = image_array(deserialize_message(last.data, RosImage))
    assert picture.shape == (frame.shape[0], 2 * frame.shape[1], 3)  # the frame, and the map beside it
    drawn = np.any(picture[:, : frame.shape[1]] != frame, axis=2)
    assert 0.002 < drawn.mean() < 0.2, "no boxes drawn over the frame (or the frame is not the last one)"
    assert main(["replay", str(path), "--snapshot", str(png), "--at", "2.5"]) == 0
