"""The one place that starts or joins Ray.

A cluster is joined when an address is given (``RuntimeConfig.address``, else the ``RAY_ADDRESS`` variable
Ray's own tools read); otherwise a private local Ray starts, bound to 127.0.0.1 with usage statistics off
and no dashboard unless asked for, its files in a folder private to the user that is cleaned up even when the driver is
killed (``agents/ray_session.py``). Everything else in the project calls ``start()`` rather than ``ray.init``.

Ray 2.60 clusters started with ``ray start --head`` require a token, but a joining process sends one only
when ``RAY_AUTH_MODE=token``: where a token is at hand (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``) and the mode is unset, joining turns it on, and a refused token is said in one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agents import ray_session

NAMESPACE = "embodied"


@dataclass(frozen=True)
class RuntimeConfig:
    address: str | None = None  # "host:port" of a cluster's GCS; None: $RAY_ADDRESS, else a local one on loopback
    num_cpus: int | None = None  # local only; None: every core
    num_gpus: int | None = None  # local only; None: what Ray detects
    log_to_driver: bool = False  # show the actors' output here (training progress)
    dashboard: bool = False  # local only, on 127.0.0.1: serves Ray's state API, which Ray Train's cleanup polls

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
    cluster = cluster_address(config)
    if cluster:
        _join(ray, cluster, common)
        return ray
    ray_session.end_session()  # a local Ray of this process that was shut down without shutdown()
    ray_dir = os.path.dirname(os.path.abspath(ray.__file__))
    ray_session.clean_stale_folders(ray_dir=ray_dir)
    folder = ray_session.start_session(ray_dir)
    try:
        ray.init(
            num_cpus=config.num_cpus,
            num_gpus=config.num_gpus,
            include_dashboard=config.dashboard,
            dashboard_host="127.0.0.1",
            dashboard_port=0,  # any free port: several local Rays may run at once
            _node_ip_address="127.0.0.1",
            _temp_dir=str(folder / "ray"),
            **common,
        )
    except BaseException:
        ray_session.end_session()
        raise
    return ray


def cluster_address(config: RuntimeConfig | None = None) -> str | None:
    """The cluster ``start`` joins: the config's address, else ``$RAY_ADDRESS``; None starts a local Ray."""
    return (config.address if config else None) or os.environ.get("RAY_ADDRESS") or None


def _join(ray, cluster: str, common: dict) -> None:
    from ray._raylet import AuthenticationTokenLoader, Config

    if "RAY_AUTH_MODE" not in os.environ and AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        os.environ["RAY_AUTH_MODE"] = "token"  # inherited by the workers ray.init starts
        Config.initialize("")  # Ray read the mode when it was imported: read it again
    try:
        ray.init(address=cluster, **common)
    except ConnectionError as exc:
        refused = "InvalidAuthToken" in repr(exc.__cause__) or "AuthenticationError" in repr(exc.__cause__)
        why = (
            "the cluster refused this machine's token: set RAY_AUTH_TOKEN to the output of `ray get-auth-token` "
            "on the head node"
            if refused
            else "nothing answered there: check the address, and that `ray start --head` runs on that host"
        )
        raise ValueError(f"cannot join the Ray cluster at {cluster}: {why}") from None


def address() -> str:
    """The running cluster's GCS address, for other processes to join (``RuntimeConfig(address=...)``)."""
    import ray

    return ray.get_runtime_context().gcs_address


def session_dir() -> Path | None:
    """The private folder of the local Ray this process started (None when it joined a cluster or has none)."""
    return ray_session.session_folder()


def shutdown() -> None:
    """Shut Ray down; a local Ray's processes are gone and its folder removed when this returns."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray_session.end_session()
