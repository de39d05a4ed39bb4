"""The kernel every grading run starts: quick profile, no grader tell-tales, inside the sandbox.

nbgrader starts it for each notebook it autogrades (``c.Execute.kernel_manager_class`` in
``nbgrader_config.py``), so the same protections hold for ``gradelib grade``, ``nbgrader autograde`` and
Formgrader. ``GRADELIB_SANDBOX`` in the grader's environment chooses: ``bwrap`` (the default; grading
fails with instructions when no working bwrap exists) or ``off`` (student code runs with the grader's
rights; ``gradelib grade --no-sandbox`` sets it, warns, and records it in the CSV).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from gradelib.grading import sandbox

GRADER_ENV_HIDDEN = ("NBGRADER_EXECUTION", "NBGRADER_VALIDATING")
SANDBOX_VARIABLE = "GRADELIB_SANDBOX"
MEMORY_VARIABLE = "GRADELIB_SANDBOX_MEMORY_GB"  # the batch passes its memory cap to the kernel's cgroup
# Logged when the kernel's cgroup killed it at that cap; the batch reads it from nbgrader's log (out-of-memory).
OUT_OF_MEMORY_MARK = "gradelib: the sandbox killed the kernel at its memory limit"
STAGE_LIMIT_BYTES = 200 * 2**20  # files next to the notebook copied into the sandbox, at most
STAGE_LIMIT_FILES = 1000


def sandbox_mode(environ: dict[str, str] | None = None) -> str:
    mode = (environ if environ is not None else os.environ).get(SANDBOX_VARIABLE, "bwrap").strip().lower()
    if mode not in ("bwrap", "off"):
        raise ValueError(f"{SANDBOX_VARIABLE} must be 'bwrap' or 'off', got {mode!r}")
    return mode


class SandboxUnavailable(RuntimeError):
    pass


class GradingKernelManager(AsyncKernelManager):
    """Starts grading kernels in the quick profile, without nbgrader's tell-tale environment variables,
    in a bubblewrap sandbox that talks to nbgrader over IPC sockets in a private directory."""

    _sandbox_root: Path | None = None
    _cgroups: sandbox.ControlGroups | None = None

    async def _async_pre_start_kernel(self, **kw):
        sandboxed = sandbox_mode() == "bwrap"
        if sandboxed:
            bwrap = sandbox.find_bwrap()
            if bwrap is None:
                raise SandboxUnavailable(sandbox.INSTALL_HINT)
            # Unix sockets cross the sandbox's network namespace; TCP on the host's loopback would not.
            self._sandbox_root = Path(tempfile.mkdtemp(prefix="gradelib-kernel-"))
            ipc_dir = self._sandbox_root / "ipc"
            ipc_dir.mkdir()
            self.transport = "ipc"
            self.ip = str(ipc_dir / "kernel")
            self.connection_file = str(ipc_dir / "connection.json")
        kernel_cmd, kw = await super()._async_pre_start_kernel(**kw)
        env = dict(kw.get("env") or os.environ)
        for name in GRADER_ENV_HIDDEN:
            env.pop(name, None)
        env["GRADELIB_PROFILE"] = "quick"
        env.pop("MPLBACKEND", None)
        if sandboxed:
            root = self._sandbox_root
            gradelib_dir = sandbox.snapshot_gradelib(root / "lib")
            staged = self._stage(kw.get("cwd"), root / "stage")
            limits = self._limits(env)
            self._cgroups = sandbox.control_groups(f"gradelib-{root.name}", limits)
            kernel_cmd = sandbox.sandboxed_command(kernel_cmd, bwrap=bwrap, ipc_dir=root / "ipc", gradelib_dir=gradelib_dir,
                                                   staged_dir=staged, limits=limits, cgroups=self._cgroups)
            env = sandbox.kernel_environment(env, gradelib_dir)
            # SIGINT to bwrap does not reach the kernel inside; an interrupt_request makes ipykernel signal itself.
            self.kernel_spec.interrupt_mode = "message"
            self.log.info("grading kernel sandboxed: %s", sandbox.describe(kernel_cmd))
        kw["env"] = env
        return kernel_cmd, kw

    @staticmethod
    def _limits(env: dict[str, str]) -> sandbox.SandboxLimits:
        """The worker's share of the machine: its thread count as CPU quota, the batch's memory cap."""
        threads = env.get("OMP_NUM_THREADS")
        memory = env.get(MEMORY_VARIABLE)
        return sandbox.SandboxLimits(cpus=float(threads) if threads else None,
                                     **({"memory_gb": float(memory)} if memory else {}))

    @staticmethod
    def _stage(cwd: str | None, destination: Path) -> Path | None:
        """A copy of the files nbgrader put next to the notebook (the assignment's data), if any."""
        if not cwd or not Path(cwd).is_dir():
            return None
        files, total = [], 0
        for path in Path(cwd).rglob("*"):
            if path.is_file() and not path.is_symlink():
                files.append(path)
                total += path.stat().st_size
                if total > STAGE_LIMIT_BYTES or len(files) > STAGE_LIMIT_FILES:
                    return None  # not an assignment folder (say, a home directory): stage nothing
        if not files:
            return None
        for path in files:
            target = destination / path.relative_to(cwd)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        return destination

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart and self._sandbox_root is not None:
            shutil.rmtree(self._sandbox_root, ignore_errors=True)
            self._sandbox_root = None
        if not restart and self._cgroups is not None:
            if self._cgroups.oom_kills():
                self.log.error(OUT_OF_MEMORY_MARK)
            self._cgroups.remove()
            self._cgroups = None

    # AsyncKernelManager binds this name to the base class's function; nbclient calls it by this name.
    cleanup_resources = _async_cleanup_resources
