"""Simulated LiDAR-camera world: scene options -> meshes -> ray-cast LiDAR and camera -> labelled drives.

Entry points::

    from perception.sim import SceneOptions, simulate_drive, iter_split, SPLIT_SEEDS
    frames = simulate_drive(rig, n_frames=10, seed=0, options=SceneOptions(weather="fog"))
"""

from perception.sim.drive import SPLIT_SEEDS, drive_seed, ego_pose, iter_split, simulate_drive
from perception.sim.lidar import BeamPattern
from perception.sim.meshes import (
    ACTOR_BUILDERS,
    ActorMesh,
    MeshBuilder,
    animal_mesh,
    building_mesh,
    car_mesh,
    construction_machine_mesh,
    cyclist_mesh,
    debris_mesh,
    pedestrian_mesh,
    pole_mesh,
    stroller_mesh,
    tree_mesh,
    truck_mesh,
    van_mesh,
)
from perception.sim.options import WEATHERS, SceneOptions

__all__ = [
    "ACTOR_BUILDERS", "SPLIT_SEEDS", "WEATHERS", "ActorMesh", "BeamPattern", "MeshBuilder", "SceneOptions",
    "animal_mesh", "building_mesh", "car_mesh", "construction_machine_mesh", "cyclist_mesh", "debris_mesh",
    "drive_seed", "ego_pose", "iter_split", "pedestrian_mesh", "pole_mesh", "simulate_drive", "stroller_mesh",
    "tree_mesh", "truck_mesh", "van_mesh",
]
