import shutil
import socket
import threading
from pathlib import Path

import pytest

from gradelib._notebooks import assignments, run_nbgrader

ROOT = Path(__file__).resolve().parents[1]


def assignment_names() -> list[str]:
    """This checkout's assignments in course order, found the way the CLI and the benchmark find them."""
    return assignments(ROOT)


def nbgrader(*args: str, cwd: Path):
    """Run an nbgrader command in a course folder; fail the test with its output if it fails."""
    result = run_nbgrader(list(args), cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def released_course(tmp_path_factory) -> Path:
    """A scratch copy of the course in which nbgrader has generated every student version afresh."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copytree(ROOT / "solutions", root / "solutions")
    for name in assignment_names():
        nbgrader("generate_assignment", name, "--create", "--force", cwd=root)
    return root


@pytest.fixture(scope="module")
def loopback_listener():
    """(port, received): a TCP server on the host's loopback that records what each connection sends.
    Sandboxed code must never reach it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    received: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            received.append(connection.recv(64))
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stop.set()
    thread.join()
    server.close()


def fork_bomb(limit: int, linger: int) -> str:
    """Python statements that fork sleeping children until a fork is refused (or ``limit`` is reached),
    then kill and reap them all; they leave ``outcome``: "fork refused after N processes (Error)" or
    "forked N processes"."""
    return f"""
import os, signal, time
children = []
try:
    while len(children) < {limit}:
        pid = os.fork()
        if pid == 0:
            time.sleep({linger})
            os._exit(0)
        children.append(pid)
    outcome = f"forked {{len(children)}} processes"
except OSError as error:
    outcome = f"fork refused after {{len(children)}} processes ({{type(error).__name__}})"
finally:
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
"""
