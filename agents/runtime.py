"""The one place that starts or joins Ray.

Locally Ray binds to 127.0.0.1 with usage statistics off and no dashboard; ``address`` joins an existing
cluster instead. Everything else in the project calls ``start()`` rather than ``ray.init``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

NAMESPACE = "embodied"


@dataclass(frozen=True)
class RuntimeConfig:
    address: str | None = None  # "host:port" of a cluster's GCS; None starts a local one on loopback
    num_cpus: int | None = None  # local only; None: every core
    num_gpus: int | None = None  # local only; None: what Ray detects
    log_to_driver: bool = False  # show the actors' output here (training progress)

    def __post_init__(self):
        for name in ("num_cpus", "num_gpus"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")


def start(config: RuntimeConfig | None = None):
    """Start (or join) Ray once per process; later calls return the running instance."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return ray
    config = config or RuntimeConfig()
    common = {"namespace": NAMESPACE, "log_to_driver": config.log_to_driver, "configure_logging": False}
    if config.address:
        ray.init(address=config.address, **common)
    else:
        ray.init(
            num_cpus=config.num_cpus,
            num_gpus=config.num_gpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=tempfile.mkdtemp(prefix="embodied_ray_"),
            **common,
        )
    return ray


def address() -> str:
    """The running cluster's GCS address, for other processes to join (``RuntimeConfig(address=...)``)."""
    import ray

    return ray.get_runtime_context().gcs_address


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
