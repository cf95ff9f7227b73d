"""ROS 2 nodes: sim bridge, planner, controller, and their launch files (see docs/architecture.md)."""
