"""Quality-of-service profiles shared by the nodes."""

from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile, ReliabilityPolicy

# Latched: a late subscriber still gets the last message (plans, the scene description).
LATCHED = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    reliability=ReliabilityPolicy.RELIABLE,
)
# Sensors and commands: only the newest message matters.
STREAM = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)

# The planner's plans: latched, and alive. The planner asserts its publisher's liveliness every
# PLAN_LEASE / 4 (MANUAL_BY_TOPIC: Fast DDS does not assert AUTOMATIC liveliness to readers in the same
# process), so a subscriber with this profile learns within PLAN_LEASE that the planner is gone, killed or
# hung (DDS itself notices a killed process only after its 20 s participant lease). The controller watches it.
PLAN_LEASE = 1.0  # s
PLAN = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    reliability=ReliabilityPolicy.RELIABLE,
    liveliness=LivelinessPolicy.MANUAL_BY_TOPIC,
    liveliness_lease_duration=Duration(seconds=PLAN_LEASE),
)
# Any publisher at all, `ros2 topic pub` with its defaults too (volatile, no lease): a volatile subscription
# matches volatile and transient-local publishers alike, but receives no history.
ANY = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
