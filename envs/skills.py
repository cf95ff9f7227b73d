"""Skills: closed-loop controllers that turn one plan step into the environment's low-level actions.

A skill is a generator: it yields an action, receives the next ``WorldState``, and finally returns a
``SkillResult`` saying whether it worked and, if not, why. ``SKILLS`` at the bottom is the one registry of
skills: the plan grammar, the constrained decoder and the plan runner (``envs/plan_runner.py``, which drives
the same skills in ``gymnasium`` episodes and in the ROS 2 controller) all read it, so a new skill is added
there once.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np

from envs.backend import EXTEND_RANGE, LIFT_RANGE, MAX_ANGULAR_SPEED, MAX_LINEAR_SPEED, WorldState, to_unit
from envs.navmap import NavMap
from envs.scene import CONTAINER_WALL_HEIGHT, CONTAINERS, ObjectSpec, SceneSpec
from envs.tasks import inside

REACH = (0.35, 0.72)  # base-to-object distances a navigate() ends at, inside the arm's extension range
CARRY_HEIGHT = 0.85
HEADING_TOLERANCE = 0.03  # rad
JOINT_TOLERANCE = 0.01  # m
GRASP_SETTLE = 0.3  # s the gripper stays closed before the grasp is checked
DROP_SETTLE = 0.6  # s the released object gets to fall into its container


@dataclass(frozen=True)
class SkillResult:
    success: bool
    reason: str = ""  # "category: detail", e.g. "unreachable: no free path to the red cube"
    steps: int = 0


Skill = Generator[np.ndarray, WorldState, SkillResult]


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


class SkillContext:
    """What skills share within an episode: the scene's object specs, the map, and the arm targets."""

    def __init__(self, scene: SceneSpec, navmap: NavMap | None = None, control_dt: float = 0.1, state: WorldState | None = None):
        self.scene = scene
        self.navmap = navmap or NavMap(scene)
        self.control_dt = control_dt  # seconds per action: skills run unchanged at 10 Hz in gym or 50 Hz in ROS
        # arm targets start where the arm is: a new plan must not open a gripper that holds something
        robot = state.robot if state is not None else None
        self.lift = robot.lift if robot else LIFT_RANGE[0]
        self.extend = robot.extend if robot else EXTEND_RANGE[0]
        self.closed = robot.gripper_closed if robot else False

    def spec(self, name: str) -> ObjectSpec | None:
        return self.scene.object(name)

    def action(self, state: WorldState, velocity=(0.0, 0.0), wz: float = 0.0) -> np.ndarray:
        """Normalised env action from a world-frame base velocity, a yaw rate and the arm targets."""
        yaw = state.robot.yaw
        c, s = np.cos(yaw), np.sin(yaw)
        vx, vy = velocity
        return np.clip(
            np.array(
                [
                    (c * vx + s * vy) / MAX_LINEAR_SPEED,
                    (-s * vx + c * vy) / MAX_LINEAR_SPEED,
                    wz / MAX_ANGULAR_SPEED,
                    to_unit(self.lift, LIFT_RANGE),
                    to_unit(self.extend, EXTEND_RANGE),
                    1.0 if self.closed else -1.0,
                ],
                dtype=np.float32,
            ),
            -1.0,
            1.0,
        )

    def heading_error(self, state: WorldState, xy) -> float:
        r = state.robot
        return _wrap(np.arctan2(xy[1] - r.y, xy[0] - r.x) - r.yaw)


def _turn_rate(error: float) -> float:
    return float(np.clip(3.0 * error, -MAX_ANGULAR_SPEED, MAX_ANGULAR_SPEED))


def _distance(state: WorldState, xy) -> float:
    return float(np.hypot(xy[0] - state.robot.x, xy[1] - state.robot.y))


Target = Callable[[WorldState], np.ndarray]


def _move_arm(ctx: SkillContext, state: WorldState, lift: float, extend, face: Target) -> Skill:
    """Drive lift and extension to their targets while turning to face ``face(state)``; ``extend`` may
    be a function of the state too, re-evaluated every step, so the arm tracks a moving target."""
    while True:
        ctx.lift = float(np.clip(lift, *LIFT_RANGE))
        ctx.extend = float(np.clip(extend(state) if callable(extend) else extend, *EXTEND_RANGE))
        error = ctx.heading_error(state, face(state))
        r = state.robot
        if abs(error) < HEADING_TOLERANCE and abs(r.lift - ctx.lift) < JOINT_TOLERANCE and abs(r.extend - ctx.extend) < JOINT_TOLERANCE:
            return state
        state = yield ctx.action(state, wz=_turn_rate(error))


def _hold(ctx: SkillContext, state: WorldState, seconds: float) -> Skill:
    for _ in range(max(1, round(seconds / ctx.control_dt))):
        state = yield ctx.action(state)
    return state


def _object_xy(name: str) -> Target:
    return lambda state: state.objects[name][:2]


def _reach_of(face: Target) -> Callable[[WorldState], float]:
    return lambda state: _distance(state, face(state))


def _unknown(ctx: SkillContext, name: str) -> SkillResult | None:
    if ctx.spec(name) is None:
        return SkillResult(False, f"object not found: no {name!r} in the scene")
    return None


def navigate(ctx: SkillContext, state: WorldState, name: str) -> Skill:
    """Drive along an A* path to within arm's reach of an object, then face it."""
    if failure := _unknown(ctx, name):
        return failure
    target = _object_xy(name)
    path = ctx.navmap.plan((state.robot.x, state.robot.y), target(state), *REACH)
    if path is None:
        return SkillResult(False, f"unreachable: no free path to the {name}")
    for i, waypoint in enumerate(path):
        last = i == len(path) - 1
        while (gap := _distance(state, waypoint)) > (0.03 if last else 0.12):
            speed = min(0.9 * MAX_LINEAR_SPEED, 1.5 * gap) if last else 0.9 * MAX_LINEAR_SPEED
            direction = (waypoint - [state.robot.x, state.robot.y]) / gap
            state = yield ctx.action(state, direction * speed, _turn_rate(ctx.heading_error(state, target(state))))
    state = yield from _move_arm(ctx, state, ctx.lift, ctx.extend, target)
    return SkillResult(True)


def look_at(ctx: SkillContext, state: WorldState, name: str) -> Skill:
    if failure := _unknown(ctx, name):
        return failure
    yield from _move_arm(ctx, state, ctx.lift, ctx.extend, _object_xy(name))
    return SkillResult(True)


def scan(ctx: SkillContext, state: WorldState) -> Skill:
    """Turn once on the spot, so the camera sweeps the room."""
    turned, last_yaw = 0.0, state.robot.yaw
    while turned < 2 * np.pi - 0.1:
        state = yield ctx.action(state, wz=0.8 * MAX_ANGULAR_SPEED)
        turned += abs(_wrap(state.robot.yaw - last_yaw))
        last_yaw = state.robot.yaw
    return SkillResult(True)


def _reach_failure(state: WorldState, name: str, xy) -> SkillResult | None:
    distance = _distance(state, xy)
    if not EXTEND_RANGE[0] <= distance <= EXTEND_RANGE[1] - 0.01:
        return SkillResult(False, f"unreachable: the {name} is {distance:.2f} m away (navigate to it first)")
    return None


def pick(ctx: SkillContext, state: WorldState, name: str) -> Skill:
    """Reach above the object, lower, close (the magic grasp), lift and retract."""
    if failure := _unknown(ctx, name):
        return failure
    holding = state.robot.holding
    if holding == name:
        return SkillResult(True)
    if holding is not None:
        return SkillResult(False, f"hands full: already holding the {holding}")
    spec = ctx.spec(name)
    where = _object_xy(name)
    if failure := _reach_failure(state, name, where(state)):
        return failure
    top = state.objects[name][2] + (CONTAINER_WALL_HEIGHT if spec.is_container else spec.half)
    grasp_z = state.objects[name][2] + (0.03 if spec.is_container else 0.0)
    ctx.closed = False
    state = yield from _move_arm(ctx, state, top + 0.12, ctx.extend, where)
    state = yield from _move_arm(ctx, state, top + 0.12, _reach_of(where), where)
    state = yield from _move_arm(ctx, state, grasp_z, _reach_of(where), where)
    ctx.closed = True
    state = yield from _hold(ctx, state, GRASP_SETTLE)
    if state.robot.holding != name:
        ctx.closed = False
        return SkillResult(False, f"grasp failed: the {name} is not in the gripper")
    state = yield from _move_arm(ctx, state, CARRY_HEIGHT, ctx.extend, where)
    yield from _move_arm(ctx, state, CARRY_HEIGHT, EXTEND_RANGE[0], where)
    return SkillResult(True)


def _drop_point(ctx: SkillContext, state: WorldState, item: ObjectSpec, box: ObjectSpec) -> np.ndarray:
    """Where to release: off-centre towards the robot in an empty container (leaving room for another
    item), else on the side away from what already lies in it."""
    centre = state.objects[box.name][:2]
    inside_now = [
        state.objects[o.name][:2]
        for o in ctx.scene.objects
        if o.name not in (item.name, box.name) and inside(state.objects[o.name], box, state.objects[box.name])
    ]
    away = np.array([state.robot.x, state.robot.y]) - centre if not inside_now else centre - np.mean(inside_now, axis=0)
    norm = np.linalg.norm(away)
    away = away / norm if norm > 1e-3 else np.array([1.0, 0.0])
    return centre + away * max(0.0, box.half - 0.016 - item.half - 0.01)


def place(ctx: SkillContext, state: WorldState, name: str, container: str) -> Skill:
    """Carry the held object over the container, lower, release, and check it landed inside."""
    for n in (name, container):
        if failure := _unknown(ctx, n):
            return failure
    if state.robot.holding != name:
        return SkillResult(False, f"not holding: the {name} is not in the gripper (pick it first)")
    item, box = ctx.spec(name), ctx.spec(container)
    if not box.is_container:
        return SkillResult(False, f"not a container: the {container} cannot hold things")
    drop = _drop_point(ctx, state, item, box)
    if failure := _reach_failure(state, container, drop):
        return failure
    where = lambda _: drop  # noqa: E731
    rim = state.objects[container][2] + CONTAINER_WALL_HEIGHT
    clear = max(ctx.lift, rim + 2 * item.half + 0.05)
    state = yield from _move_arm(ctx, state, clear, ctx.extend, where)
    state = yield from _move_arm(ctx, state, clear, _reach_of(where), where)
    state = yield from _move_arm(ctx, state, rim - CONTAINER_WALL_HEIGHT + 0.012 + item.half + 0.02, ctx.extend, where)
    ctx.closed = False
    state = yield from _hold(ctx, state, DROP_SETTLE)
    state = yield from _move_arm(ctx, state, CARRY_HEIGHT, ctx.extend, where)
    state = yield from _move_arm(ctx, state, CARRY_HEIGHT, EXTEND_RANGE[0], where)
    if not inside(state.objects[name], box, state.objects[container]):
        return SkillResult(False, f"missed: the {name} landed outside the {container}")
    return SkillResult(True)


OBJECT_KINDS = frozenset({"object", "item", "container"})  # argument kinds that name a scene object


def suits(kind: str, name: str) -> bool:
    """Can the object called ``name`` ("red bowl") fill an argument of ``kind``? An item is what the robot
    carries, a container what holds it: telling them apart at the plan keeps ``pick(green bin)`` and
    ``place(red cube, red cube)`` out of plans instead of failing them in motion."""
    if kind not in ("item", "container"):
        return True
    return (name.rsplit(" ", 1)[-1] in CONTAINERS) == (kind == "container")


@dataclass(frozen=True)
class SkillSpec:
    """A skill as plans see it: the kinds of its arguments ("object" names any scene object, "item" one the
    robot can carry, "container" one that holds items, "text" is free words), the controller that carries
    it out and its time limit in seconds. A skill without a controller is terminal: it ends the plan
    (``answer(x)``, ``done()``)."""

    args: tuple[str, ...] = ()
    controller: Callable[..., Skill] | None = None
    time_limit: float = 0.0

    @property
    def terminal(self) -> bool:
        return self.controller is None


SKILLS: dict[str, SkillSpec] = {
    "navigate": SkillSpec(("object",), navigate, 40.0),
    "look_at": SkillSpec(("object",), look_at, 8.0),
    "scan": SkillSpec((), scan, 12.0),
    "pick": SkillSpec(("item",), pick, 15.0),
    "place": SkillSpec(("item", "container"), place, 15.0),
    "answer": SkillSpec(("text",)),
    "done": SkillSpec(()),
}
