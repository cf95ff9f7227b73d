#!/usr/bin/env sh
# Run a command with ROS 2 discovery kept on this host, inside a private network namespace (loopback
# only) where `unshare -n` is allowed, so that no test can send a packet off the machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( $$ % 100 + 1 ))}"
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
if unshare -n true 2>/dev/null; then
  exec unshare -n sh -c 'ip link set lo up && exec "$@"' sh "$@"
fi
echo "note: unshare -n is not available here; running with ROS discovery limited to localhost" >&2
exec "$@"
