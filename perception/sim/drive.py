"""Drives: sequences of simulated frames at 10 Hz, and reproducible dataset splits generated in parallel."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Iterator

import numpy as np

from perception.errors import ConfigError
from perception.frame import Frame
from perception.rig import Rig
from perception.sim.camera import CameraModel, render_camera
from perception.sim.labels import ground_truth
from perception.sim.lidar import BeamPattern, render_lidar
from perception.sim.options import SceneOptions
from perception.sim.raycast import FrameScene, SceneAttributes, set_ray_threads
from perception.sim.weather import WeatherModel
from perception.sim.world import FRAME_DT, World, generate_world

logger = logging.getLogger(__name__)

EPOCH_NS = 1_700_000_000_000_000_000  # stamp of a drive's first frame
FRAME_NS = int(FRAME_DT * 1e9)
DRIVE_NS = 600_000_000_000  # iter_split spaces drives of a split 10 min apart
_SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: Disjoint seed bases of the dataset splits.
SPLIT_SEEDS: dict[str, int] = {"train": 1_000_003, "val": 2_000_003, "calib": 3_000_017, "test": 4_000_037,
                               "ood": 5_000_011}


def ego_pose(world: World, t: float, rig: Rig) -> np.ndarray:
    """4x4 pose of the LiDAR in the world frame at time ``t``."""
    pos, yaw = world.ego.pose(world.road, t)
    c, s = np.cos(yaw), np.sin(yaw)
    base = np.eye(4)
    base[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    base[:3, 3] = pos
    return base @ rig.base_to_lidar


class DriveRenderer:
    """Renders the frames of one world (scene meshes and rays built once, actors moved per frame)."""

    def __init__(self, rig: Rig, world: World, options: SceneOptions, pattern: BeamPattern) -> None:
        self.rig, self.world, self.options, self.pattern = rig, world, options, pattern
        self.attrs = SceneAttributes(world)
        self.camera = CameraModel(rig)
        self.weather = WeatherModel.from_options(options.weather, options.weather_intensity)

    def frame(self, index: int, seed: int) -> Frame:
        """Render frame ``index`` (time ``index * 0.1 s``); ``seed`` drives the sensor noise."""
        timings: dict[str, float] = {}
        cpu: dict[str, float] = {}
        tick, ctick = time.perf_counter(), time.process_time()

        def lap(name: str) -> None:
            nonlocal tick, ctick
            now, cnow = time.perf_counter(), time.process_time()
            timings[name], cpu[name] = (now - tick) * 1e3, (cnow - ctick) * 1e3
            tick, ctick = now, cnow

        rng_lidar = np.random.default_rng([seed, index, 1])
        rng_cam = np.random.default_rng([seed, index, 2])
        t = index * FRAME_DT
        world, opts = self.world, self.options
        pose = ego_pose(world, t, self.rig)
        fs = FrameScene(world, self.attrs, t)
        lap("scene")
        points = render_lidar(world, fs, pose, self.pattern, rng_lidar, self.weather, opts.lidar_blackout_deg)
        lap("lidar")
        cam = render_camera(world, fs, self.camera, pose, rng_cam, self.weather, night=opts.night,
                            noise_std=opts.image_noise_std, shadows=opts.shadows)
        lap("camera")
        boxes, shares = ground_truth(world, fs, self.rig, self.camera, pose, cam, points)
        lap("labels")
        speed = world.ego.vs
        return Frame(
            points=points,
            image=None if opts.camera_missing else cam.image,
            rig=self.rig,
            stamp_ns=EPOCH_NS + index * FRAME_NS,
            boxes=boxes,
            frame_id=f"sim_{seed}_f{index:02d}",
            meta={
                "source": "sim", "seed": seed, "index": index, "scene_type": world.scene_type,
                "weather": opts.weather,
                "weather_intensity": opts.weather_intensity if opts.weather != "clear" else 0.0,
                "night": opts.night, "camera_missing": opts.camera_missing,
                "lidar_blackout_deg": opts.lidar_blackout_deg, "channels": len(self.pattern.elevations),
                "ego_speed": float(speed), "world_from_lidar": pose, "visible_share": shares,
                "timings_ms": timings, "cpu_ms": cpu,
            },
        )


def simulate_drive(rig: Rig, n_frames: int, seed: int, options: SceneOptions | None = None) -> Iterator[Frame]:
    """Yield ``n_frames`` frames of one simulated drive at 10 Hz; identical for identical arguments."""
    if not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ConfigError(f"n_frames must be a positive integer, got {n_frames!r}", "simulate_drive.n_frames")
    options = options or SceneOptions()
    options.validate()
    pattern = BeamPattern.from_model(rig.lidar_model, options.lidar_model, where=f"{rig.source}:lidar.model")
    world = generate_world(np.random.default_rng([int(seed), 0]), options, int(n_frames))
    renderer = DriveRenderer(rig, world, options, pattern)
    for i in range(int(n_frames)):
        yield renderer.frame(i, int(seed))


def drive_seed(split: str, seed: int, drive: int) -> int:
    """Seed of drive ``drive`` of a split (disjoint across splits and seeds)."""
    if split not in SPLIT_SEEDS:
        raise ConfigError(f"unknown split {split!r}; expected one of {tuple(SPLIT_SEEDS)}", "iter_split.split")
    return int(np.random.SeedSequence([SPLIT_SEEDS[split], int(seed), int(drive)]).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


def _render_drive(args: tuple[Rig, str, int, int, int, SceneOptions | None]) -> list[Frame]:
    """Worker: all frames of one drive of a split (open3d objects are created here, in the worker)."""
    rig, split, seed, drive, n, options = args
    frames = list(simulate_drive(rig, n, drive_seed(split, seed, drive), options))
    for i, f in enumerate(frames):
        f.frame_id = f"{split}_s{seed}_d{drive:03d}_f{i:02d}"
        f.stamp_ns += drive * DRIVE_NS
        f.meta.update(split=split, split_seed=seed, drive=drive)
    return frames


def _init_worker() -> None:
    """Each worker renders on one core (the pool supplies the parallelism)."""
    set_ray_threads(1)


def iter_split(rig: Rig, split: str, n_frames: int, seed: int = 0, options: SceneOptions | None = None,
               frames_per_drive: int = 10, workers: int = 2) -> Iterator[Frame]:
    """Yield ``n_frames`` frames of a split, in order: drives of ``frames_per_drive`` frames, each seeded from
    (split, seed, drive index), rendered by ``workers`` spawned processes (``workers=1``: in this process)."""
    if not isinstance(n_frames, (int, np.integer)) or n_frames < 0:
        raise ConfigError(f"n_frames must be a non-negative integer, got {n_frames!r}", "iter_split.n_frames")
    if frames_per_drive < 1:
        raise ConfigError(f"frames_per_drive must be >= 1, got {frames_per_drive}", "iter_split.frames_per_drive")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}", "iter_split.workers")
    drive_seed(split, seed, 0)  # validates the split name
    if options is not None:
        options.validate()
    jobs = [(rig, split, int(seed), d, min(frames_per_drive, n_frames - d * frames_per_drive), options)
            for d in range((n_frames + frames_per_drive - 1) // frames_per_drive)]
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            yield from _render_drive(job)
        return
    ctx = mp.get_context("spawn")
    # Workers inherit the environment at spawn: single-threaded BLAS / OpenMP (threaded BLAS on thin arrays
    # is many times slower on a busy machine), restored afterwards for this process.
    saved = {k: os.environ.get(k) for k in _SINGLE_THREAD_ENV}
    os.environ.update(_SINGLE_THREAD_ENV)
    try:
        pool = ctx.Pool(min(workers, len(jobs)), initializer=_init_worker)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        pending: deque = deque()
        todo = iter(jobs)
        window = 2 * workers  # bounded look-ahead keeps memory flat for long splits
        for job in todo:
            pending.append(pool.apply_async(_render_drive, (job,)))
            if len(pending) >= window:
                break
        while pending:
            frames = pending.popleft().get()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.apply_async(_render_drive, (nxt,)))
            yield from frames
    finally:
        pool.terminate()
        pool.join()
