"""Run ROS 2 YAML launch files without ``ros2 launch`` (which is not installable from PyPI).

Supports what this project's launch files use: ``arg`` (name, default, description), ``let``, ``node``
(pkg, exec, name, namespace, param from a file or inline, remap, args, ros_args), ``include`` (file, arg),
``if``/``unless`` on entities, and the substitutions ``$(var NAME)``, ``$(find-pkg-share PKG)``,
``$(env NAME [DEFAULT])`` and ``$(dirname)``. Each node runs as ``python -m ros_nodes.<exec> --ros-args ...``
in its own process with the DDS settings that keep traffic on this machine; output lines are prefixed
with the node name; SIGINT/SIGTERM are forwarded and the group is stopped (SIGINT, then SIGTERM, then
SIGKILL). Children die with the runner (PR_SET_PDEATHSIG), so no orphans are left behind.
Pure Python: no rclpy import here.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from perception.errors import ConfigError
from ros_nodes.paths import GRAPH_ID_ENV, PACKAGE, dds_env, share_dir

_SUBST = re.compile(r"\$\(([^()$]*)\)")  # innermost $( ... )
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off", ""}


@dataclass
class NodeSpec:
    """One node process to start."""

    pkg: str
    exec: str
    name: str
    namespace: str = ""
    param_files: list[str] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)  # name -> YAML value text
    remaps: list[tuple[str, str]] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    ros_args: list[str] = field(default_factory=list)

    def command(self, python: str = sys.executable) -> list[str]:
        """The command line: ``python -m ros_nodes.<exec> ARGS --ros-args ...``."""
        cmd = [python, "-m", f"ros_nodes.{self.exec}", *self.args, "--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            cmd += ["-r", f"__ns:={self.namespace if self.namespace.startswith('/') else '/' + self.namespace}"]
        for f in self.param_files:
            cmd += ["--params-file", f]
        for k, v in self.params.items():
            cmd += ["-p", f"{k}:={v}"]
        for src, dst in self.remaps:
            cmd += ["-r", f"{src}:={dst}"]
        return cmd + self.ros_args


@dataclass
class LaunchArg:
    """A declared launch argument."""

    name: str
    default: str | None
    description: str = ""


@dataclass
class LaunchPlan:
    """What a launch file resolves to: its declared arguments and the nodes to start."""

    args: list[LaunchArg]
    nodes: list[NodeSpec]


def _truthy(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"expected true/false, got {value!r}", where)


def _yaml_text(value: Any) -> str:
    """A parameter value as the YAML text ``-p name:=value`` expects."""
    if isinstance(value, str):
        return value if value else "''"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


class _Context:
    def __init__(self, file: Path, variables: dict[str, str]) -> None:
        self.file = file
        self.vars = variables

    def subst(self, value: Any, where: str) -> Any:
        """Apply substitutions to strings (recursively in lists and mappings)."""
        if isinstance(value, list):
            return [self.subst(v, where) for v in value]
        if isinstance(value, dict):
            return {k: self.subst(v, where) for k, v in value.items()}
        if not isinstance(value, str):
            return value
        text = value
        while True:
            m = _SUBST.search(text)
            if m is None:
                return text
            text = text[:m.start()] + self._one(m.group(1), where) + text[m.end():]

    def _one(self, body: str, where: str) -> str:
        parts = body.split()
        if not parts:
            raise ConfigError("empty substitution $()", where)
        kind, rest = parts[0], parts[1:]
        if kind == "var":
            if len(rest) != 1:
                raise ConfigError("$(var NAME) takes one name", where)
            if rest[0] not in self.vars:
                raise ConfigError(f"undefined launch argument '{rest[0]}'", where)
            return self.vars[rest[0]]
        if kind == "find-pkg-share":
            if len(rest) != 1:
                raise ConfigError("$(find-pkg-share PKG) takes one package", where)
            return str(share_dir(rest[0]))
        if kind == "env":
            if not 1 <= len(rest) <= 2:
                raise ConfigError("$(env NAME [DEFAULT])", where)
            if rest[0] not in os.environ and len(rest) == 1:
                raise ConfigError(f"environment variable {rest[0]} is not set", where)
            return os.environ.get(rest[0], rest[1] if len(rest) == 2 else "")
        if kind == "dirname":
            return str(self.file.parent)
        raise ConfigError(f"unsupported substitution $({kind} ...); supported: var, find-pkg-share, env, dirname",
                          where)


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ConfigError("launch file not found", str(path))
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", str(path)) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("launch"), list):
        raise ConfigError("expected a top-level 'launch:' list", str(path))
    return doc["launch"]


def plan_launch(path: str | Path, arguments: dict[str, str] | None = None) -> LaunchPlan:
    """Resolve a YAML launch file with ``arguments`` (``name -> value``) into the nodes to start.

    Raises :class:`ConfigError` naming the file and entry for anything unsupported or missing, and for
    arguments that no file declares (typos).
    """
    plan = _plan(path, dict(arguments or {}))
    unknown = set(arguments or {}) - {a.name for a in plan.args}
    if unknown:
        raise ConfigError(f"unknown launch argument(s) {sorted(unknown)}; declared: "
                          f"{', '.join(a.name for a in plan.args)}", str(path))
    return plan


def _plan(path: str | Path, arguments: dict[str, str]) -> LaunchPlan:
    path = Path(path).resolve()
    ctx = _Context(path, {})
    declared: list[LaunchArg] = []
    nodes: list[NodeSpec] = []
    for i, entity in enumerate(_load(path)):
        where = f"{path}:launch[{i}]"
        if not isinstance(entity, dict) or len(entity) != 1:
            raise ConfigError("each entry must be a mapping with one key (arg, let, node, include)", where)
        kind, body = next(iter(entity.items()))
        where = f"{where}.{kind}"
        if not isinstance(body, dict):
            raise ConfigError("expected a mapping", where)
        if "if" in body and not _truthy(str(ctx.subst(body["if"], where)), f"{where}.if"):
            continue
        if "unless" in body and _truthy(str(ctx.subst(body["unless"], where)), f"{where}.unless"):
            continue
        if kind == "arg":
            name = _required(body, "name", where)
            default = body.get("default")
            declared.append(LaunchArg(name, None if default is None else str(default),
                                      str(body.get("description", ""))))
            if name in arguments:
                ctx.vars[name] = arguments.pop(name)
            elif default is not None:
                ctx.vars[name] = str(ctx.subst(str(default), f"{where}.default"))
            else:
                raise ConfigError(f"launch argument '{name}' has no default; pass {name}:=VALUE", where)
        elif kind == "let":
            ctx.vars[_required(body, "name", where)] = str(ctx.subst(str(_required(body, "value", where)), where))
        elif kind == "node":
            nodes.append(_node(body, ctx, where))
        elif kind == "include":
            file = ctx.subst(str(_required(body, "file", where)), f"{where}.file")
            inc_args = {}
            for j, a in enumerate(body.get("arg", []) or []):
                inc_args[_required(a, "name", f"{where}.arg[{j}]")] = str(
                    ctx.subst(str(_required(a, "value", f"{where}.arg[{j}]")), f"{where}.arg[{j}]"))
            # Arguments given on the command line reach included files too, as with ros2 launch.
            sub = _plan(file, {**arguments, **inc_args})
            declared += [a for a in sub.args if a.name not in {d.name for d in declared}]
            nodes += sub.nodes
        else:
            raise ConfigError(f"unsupported launch entity '{kind}' (supported: arg, let, node, include)", where)
    return LaunchPlan(declared, nodes)


def _required(body: Any, key: str, where: str) -> Any:
    if not isinstance(body, dict) or key not in body:
        raise ConfigError(f"missing '{key}'", where)
    return body[key]


def _node(body: dict[str, Any], ctx: _Context, where: str) -> NodeSpec:
    known = {"pkg", "exec", "name", "namespace", "param", "remap", "args", "ros_args", "output", "if", "unless"}
    unknown = set(body) - known
    if unknown:
        raise ConfigError(f"unsupported node key(s) {sorted(unknown)}", where)
    pkg = ctx.subst(str(_required(body, "pkg", where)), where)
    exe = ctx.subst(str(_required(body, "exec", where)), where)
    if pkg != PACKAGE:
        raise ConfigError(f"only package '{PACKAGE}' can be run here, got '{pkg}'", f"{where}.pkg")
    if importlib.util.find_spec(f"ros_nodes.{exe}") is None:
        raise ConfigError(f"no node module ros_nodes.{exe}", f"{where}.exec")
    spec = NodeSpec(pkg=pkg, exec=exe, name=ctx.subst(str(body.get("name", exe)), where),
                    namespace=ctx.subst(str(body.get("namespace", "")), where))
    for j, p in enumerate(body.get("param", []) or []):
        pw = f"{where}.param[{j}]"
        if isinstance(p, dict) and "from" in p:
            file = Path(ctx.subst(str(p["from"]), pw))
            if not file.is_file():
                raise ConfigError(f"parameter file not found: {file}", pw)
            spec.param_files.append(str(file))
        else:
            spec.params[str(_required(p, "name", pw))] = _yaml_text(ctx.subst(_required(p, "value", pw), pw))
    for j, r in enumerate(body.get("remap", []) or []):
        rw = f"{where}.remap[{j}]"
        spec.remaps.append((ctx.subst(str(_required(r, "from", rw)), rw), ctx.subst(str(_required(r, "to", rw)), rw)))
    spec.args = shlex.split(ctx.subst(str(body.get("args", "")), where))
    spec.ros_args = shlex.split(ctx.subst(str(body.get("ros_args", "")), where))
    return spec


def parse_cli_arguments(items: list[str]) -> dict[str, str]:
    """``["name:=value", ...]`` -> ``{name: value}``; ConfigError for anything else."""
    out = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise ConfigError(f"expected NAME:=VALUE, got {item!r}", "launch arguments")
        out[name] = value
    return out


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child must not dlopen between fork and exec
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM it when the runner dies, even by SIGKILL."""
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LaunchRunner:
    """Starts the nodes of a plan, relays their output and stops them together."""

    def __init__(self, nodes: list[NodeSpec], out: TextIO = sys.stdout, sigint_timeout_s: float = 5.0,
                 sigterm_timeout_s: float = 3.0, env: dict[str, str] | None = None) -> None:
        self.nodes = nodes
        self.out = out
        self.sigint_timeout_s = sigint_timeout_s
        self.sigterm_timeout_s = sigterm_timeout_s
        self.env = dds_env(env)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
        # One graph id per launch (kept when the caller set one): the player counts only its own graph's nodes.
        self.env[GRAPH_ID_ENV] = self.env.get(GRAPH_ID_ENV) or uuid.uuid4().hex[:12]
        self.procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._readers: list[threading.Thread] = []
        self._shutdown = threading.Event()

    def log(self, name: str, line: str) -> None:
        """Write one prefixed line."""
        with self._lock:
            self.out.write(f"[{name}] {line}\n")
            self.out.flush()

    def start(self) -> None:
        """Start every node process."""
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ConfigError(f"node names must be unique, got {names}", "launch")
        for node in self.nodes:
            cmd = node.command()
            self.log("launch", f"starting {node.name}: {shlex.join(cmd)}")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env, start_new_session=True, preexec_fn=_die_with_parent)
            self.procs[node.name] = proc
            reader = threading.Thread(target=self._relay, args=(node.name, proc), daemon=True)
            reader.start()
            self._readers.append(reader)

    def _relay(self, name: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            self.log(name, raw.decode(errors="replace").rstrip("\n"))

    def request_shutdown(self, *_: Any) -> None:
        """Ask the run loop to stop the group (safe from a signal handler)."""
        self._shutdown.set()

    def wait(self) -> int:
        """Block until every node has exited (or a shutdown was requested and done); returns an exit status."""
        reported: set[str] = set()
        while not self._shutdown.is_set():
            for name, proc in self.procs.items():
                if proc.poll() is not None and name not in reported:
                    reported.add(name)
                    self.log("launch", f"{name} exited with code {proc.returncode}")
            if len(reported) == len(self.procs):
                break
            self._shutdown.wait(0.1)
        failed = [n for n, p in self.procs.items() if p.poll() is not None and p.returncode not in (0, None)]
        self.stop()
        for reader in self._readers:
            reader.join(timeout=1.0)
        return 1 if failed else 0

    def stop(self) -> None:
        """SIGINT every live node, then SIGTERM, then SIGKILL, each after its timeout."""
        for sig, timeout in ((signal.SIGINT, self.sigint_timeout_s), (signal.SIGTERM, self.sigterm_timeout_s),
                             (signal.SIGKILL, 2.0)):
            live = {n: p for n, p in self.procs.items() if p.poll() is None}
            if not live:
                return
            self.log("launch", f"sending {sig.name} to {', '.join(live)}")
            for proc in live.values():
                try:
                    os.killpg(proc.pid, sig)  # the node and anything it started
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            for name, proc in live.items():
                try:
                    code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                    self.log("launch", f"{name} exited with code {code}")
                except subprocess.TimeoutExpired:
                    pass


def run_launch(path: str | Path, arguments: dict[str, str] | None = None, out: TextIO = sys.stdout) -> int:
    """Plan, start and supervise a launch file until its nodes exit or SIGINT/SIGTERM arrives."""
    plan = plan_launch(path, arguments)
    runner = LaunchRunner(plan.nodes, out=out)
    previous = {sig: signal.signal(sig, runner.request_shutdown) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        runner.start()
        return runner.wait()
    finally:
        runner.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def find_launch_file(name: str | Path) -> Path:
    """A launch file given as a path, or as the name of a file in the package's launch/ folder."""
    p = Path(name)
    if p.is_file():
        return p.resolve()
    candidate = share_dir() / "launch" / p.name
    if candidate.is_file():
        return candidate
    raise ConfigError(f"not found (nor in {share_dir() / 'launch'})", str(name))
