"""ROS 2 rim of the stack: message conversion, synchronisation, one module per node, the YAML launch runner.

Everything ROS (rclpy, *_msgs) lives here; the algorithms are in :mod:`perception`.
"""
