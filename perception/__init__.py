"""trustworthy_perception core: sensor rig, data, fusion detector and its trust layer.

Plain Python + PyTorch. Nothing in this package imports ROS; the ROS 2 nodes in
``ros_nodes`` convert messages to :class:`perception.frame.Frame` at their edge.
"""

__version__ = "0.1.0"
