"""Simulated worlds: seeded scenes, gymnasium environments, tasks, skills and the oracle planner.

Importing the package registers the environments with gymnasium (``embodied/PickPlace-v0`` and so on).
"""

from gymnasium.envs.registration import register

from envs.tasks import TEMPLATED_TASKS, Task
from envs.vision_tasks import VISION_TASKS

ENV_IDS = {
    "object_nav": "embodied/ObjectNav-v0",
    "pick_place": "embodied/PickPlace-v0",
    "rearrange": "embodied/Rearrange-v0",
    "eqa": "embodied/EQA-v0",
    "refer": "embodied/Refer-v0",
    "sets": "embodied/Sets-v0",
    "conditional": "embodied/Conditional-v0",
    "refuse": "embodied/Refuse-v0",
}
TASKS: dict[str, type[Task]] = {t.name: t for t in (*TEMPLATED_TASKS, *VISION_TASKS)}

for _task, _env_id in ENV_IDS.items():
    register(id=_env_id, entry_point="envs.env:EmbodiedEnv", kwargs={"task": _task})
