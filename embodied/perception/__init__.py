"""Perception: the robot's own RGB-D frames and odometry in; tables, named objects with poses and sizes,
and an occupancy grid out (``pipeline.Perception``)."""
