"""The rclpy side of ``perception replay --report``: start the replay graph, follow the recorder's and the
player's latched status topics with a progress bar until every cloud is answered (or the graph is done), stop it.
Kept in ``ros_nodes`` so that ``perception/`` never imports ROS; the CLI imports it only for an evaluation run.
"""

from __future__ import annotations

from pathlib import Path

#: After the player is done, stop waiting for detections when none came for this long (s).
SETTLE_S = 8.0
#: Start-up allowance (model loading and warm-up of every node on a busy 2-core machine), s.
STARTUP_S = 600.0


def run_evaluation_graph(arguments: dict[str, str], clouds: int, duration_s: float) -> tuple[int, str]:
    """Start the graph, show progress until every cloud is answered (or the graph is done), stop it."""
    import json
    import os
    import signal
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String
    from tqdm import tqdm

    from perception.io.recording import RECORDER_STATUS_TOPIC, STATUS_TOPIC
    from ros_nodes.launch_runner import LaunchRunner, find_launch_file, plan_launch
    from ros_nodes.paths import dds_env
    from ros_nodes.qos import latched_qos

    os.environ.update({k: v for k, v in dds_env().items() if k not in os.environ or k.startswith(("ROS_", "FASTDDS"))})
    launch_file = find_launch_file("replay.launch.yaml")
    plan = plan_launch(launch_file, arguments)
    log_path = Path(arguments["record_bag"]).with_name(Path(arguments["record_bag"]).name + ".launch.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("w")
    runner = LaunchRunner(plan.nodes, out=log_file)
    stop = {"signal": ""}
    previous = {sig: signal.signal(sig, lambda s, _f: stop.update(signal=signal.Signals(s).name))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init()
    node = rclpy.create_node("replay_monitor", namespace="/replay")
    progress: dict = {}
    status: dict = {}
    last = [time.monotonic()]

    def on_progress(msg: String) -> None:
        progress.update(json.loads(msg.data))
        last[0] = time.monotonic()

    def on_status(msg: String) -> None:
        status.update(json.loads(msg.data))
        last[0] = time.monotonic()

    # Both latched state topics: the recorder counts what it recorded, the player says when it is done.
    node.create_subscription(String, RECORDER_STATUS_TOPIC, on_progress, latched_qos(depth=1))
    node.create_subscription(String, STATUS_TOPIC, on_status, latched_qos(depth=1))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    why = "?"
    print(f"starting the graph (log: {log_path})")
    runner.start()
    deadline = time.monotonic() + STARTUP_S + 3 * duration_s + 60
    bar = tqdm(total=clouds, desc="replay", unit="frame")
    try:
        while True:
            executor.spin_once(timeout_sec=0.1)
            answered = int(progress.get("answered", 0))
            if answered > bar.n:
                bar.update(answered - bar.n)
            if stop["signal"]:
                why = f"stopped by {stop['signal']}"
                break
            published = (status.get("by_topic") or {}).get("/sensing/lidar/points")
            if status.get("state") == "done" and answered >= (published or clouds):
                why = "every cloud answered"
                break
            if status.get("state") in ("done", "failed") and time.monotonic() - last[0] > SETTLE_S:
                why = f"player {status['state']}, graph quiet for {SETTLE_S:.0f} s"
                break
            dead = [n for n, p in runner.procs.items() if p.poll() is not None]
            if dead:
                why = f"node(s) {', '.join(dead)} exited (see {log_path})"
                break
            if time.monotonic() > deadline:
                why = "timed out"
                break
    finally:
        bar.close()
        runner.stop()
        for reader in runner._readers:
            reader.join(timeout=1.0)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log_file.close()
    return int(progress.get("answered", 0)), why
