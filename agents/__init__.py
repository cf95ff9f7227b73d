"""Ray actors and agents: inference, parallel rollouts, closed-loop planning, RL (see docs/architecture.md)."""
