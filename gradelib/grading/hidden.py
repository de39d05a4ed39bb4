"""Hidden tests stay hidden: out of feedback, out of outputs, and answer keys out of the kernel.

nbgrader (0.9) restores every grade cell from the gradebook before grading, hidden part included, runs
it in the student's kernel, and renders the executed notebook as feedback. That leaks in three ways:

1. **feedback shows each grade cell's source**, hidden part included: every hidden seed and every
   concept question's expected answer reached every student who got feedback;
2. **outputs**: a failing hidden check's traceback quotes its line, and student code can read hidden
   source in the kernel (an IPython ``pre_run_cell`` hook, ``In``/``_ih``, a wrapped ``run_cell``) and
   print it into a cell's output, which feedback shows;
3. **the kernel**: a concept question's hidden part carried its expected answer as a literal, which
   student code running in the same kernel could read, and answer with.

Two nbgrader preprocessors, configured in ``nbgrader_config.py`` for every way of autograding, close them:

* :class:`SealHiddenTests` (sanitize stage, after ``OverwriteCells`` restored the cells): each hidden
  ``check_answer(..., expected=...)`` becomes ``record_answer(...)``, which only reports the answer.
  The key stays in the gradebook.
* :class:`SealFeedback` (autograde stage, after ``Execute``, before ``SaveAutoGrades`` scores the cells):
  in the grader's process, it marks the recorded answers against the key read from the gradebook,
  removes every output line that quotes hidden source (tracebacks, captured source), and cuts the hidden
  parts out of the grade cells' source. What it removed is recorded in the notebook's metadata
  (``gradelib``), which ``gradelib grade`` reports in the CSV.

What stays possible (see docs/grading.md, "Threat model"): hidden *seeds* are values the kernel has to
use, so code that encodes them (say, in base64) before printing gets them past the line filter. They
only let a student rehearse the hidden cases; answer keys never enter the kernel at all.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.utils import is_grade

from gradelib.checks._core import CaseResult, format_table
from gradelib.checks.answers import ANSWER_MIME, answer_problem

HIDDEN_REGION = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS\n?", re.S)
SHOWN_INSTEAD = "# (hidden tests: run by the autograder, not shown)\n"
REMOVED_LINE = "[gradelib: line removed because it quoted a hidden test]"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MIN_QUOTED = 8  # characters: a hidden line shorter than this ("else:") is too common to mean a quote


@dataclass(frozen=True)
class AnswerKey:
    label: str
    expected: object
    kind: str
    points: float
    options: str = "ABCD"
    rel_tol: float = 1e-3
    mistakes: dict | None = None


def hidden_parts(source: str) -> list[str]:
    return HIDDEN_REGION.findall(source)


def visible_part(source: str) -> str:
    return HIDDEN_REGION.sub(SHOWN_INSTEAD, source)


def _called_name(node: ast.Call) -> str | None:
    return getattr(node.func, "id", None) or getattr(node.func, "attr", None)


def answer_keys(hidden: str) -> list[AnswerKey]:
    """The keys of the ``check_answer`` calls in one hidden part; every argument must be a literal."""
    keys = []
    for node in ast.walk(ast.parse(hidden)):
        if isinstance(node, ast.Call) and _called_name(node) == "check_answer":
            arguments = {k.arg: k.value for k in node.keywords}
            try:
                values = {name: ast.literal_eval(value) for name, value in arguments.items()
                          if name in ("expected", "kind", "points", "options", "rel_tol", "mistakes")}
                label = ast.literal_eval(node.args[0])
            except (ValueError, IndexError) as error:
                raise ValueError(f"check_answer in a hidden test needs literal arguments: {ast.unparse(node)}") from error
            keys.append(AnswerKey(label=label, **values))
    return keys


class _RecordInsteadOfCheck(ast.NodeTransformer):
    def visit_Call(self, node: ast.Call):
        self.generic_visit(node)
        if _called_name(node) == "check_answer":
            if isinstance(node.func, ast.Name):
                node.func = ast.Name("record_answer", ast.Load())
            else:
                node.func.attr = "record_answer"
            node.keywords = [k for k in node.keywords if k.arg not in ("expected", "rel_tol", "mistakes")]
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom):
        for alias in node.names:
            if alias.name == "check_answer":
                alias.name = "record_answer"
        return node


def seal(hidden: str) -> str:
    """A hidden part as the kernel may see it: each check_answer(..., expected=...) recording the answer instead."""
    if "check_answer" not in hidden:
        return hidden
    return ast.unparse(ast.fix_missing_locations(_RecordInsteadOfCheck().visit(ast.parse(hidden)))) + "\n"


class SealHiddenTests(NbGraderPreprocessor):
    """Sanitize stage: no answer key goes into the grading kernel."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and is_grade(cell) and "BEGIN HIDDEN TESTS" in cell.source:
            cell.source = HIDDEN_REGION.sub(
                lambda m: f"### BEGIN HIDDEN TESTS\n{seal(m.group(1))}### END HIDDEN TESTS\n", cell.source)
        return cell, resources


# ------------------------------------------------------------------------------------------------
# After execution, in the grader's process


def quoted_lines(originals: dict[str, str]) -> set[str]:
    """Lines of hidden parts (as written and as sealed) that appear nowhere in a visible part."""
    hidden, visible = set(), set()
    for source in originals.values():
        visible.update(line.strip() for line in visible_part(source).splitlines())
        for part in hidden_parts(source):
            for text in (part, seal(part)):
                hidden.update(line.strip() for line in text.splitlines())
    quoted = {line for line in hidden - visible if len(line) >= MIN_QUOTED}
    return quoted | {"### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"} if quoted else quoted


def quotes_hidden(text: str, secrets: set[str]) -> list[str]:
    """The hidden lines that ``text`` quotes. A quote ends where the line does, so a visible line that
    merely begins like a hidden one (``...import check_answer_form`` vs ``...import check_answer``) is not one."""
    return [secret for secret in secrets if secret in text
            and re.search(re.escape(secret) + r"(?!\w)", text)]


def _scrub_text(text: str, secrets: set[str]) -> tuple[str, int]:
    lines, removed = [], 0
    for line in text.splitlines(keepends=True):
        plain = ANSI.sub("", line)
        if quotes_hidden(plain, secrets):
            lines.append(REMOVED_LINE + ("\n" if line.endswith("\n") else ""))
            removed += 1
        else:
            lines.append(line)
    return "".join(lines), removed


def scrub_outputs(cell, secrets: set[str]) -> tuple[int, int]:
    """Replace every output line of ``cell`` that quotes a hidden line.

    Returns (lines removed from tracebacks, lines removed elsewhere). A failing check's traceback quotes
    its whole cell as a matter of course; hidden source in printed or displayed output means code read it."""
    in_tracebacks = elsewhere = 0
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            output.text, n = _scrub_text(output.text, secrets)
            elsewhere += n
        elif output.output_type == "error":
            scrubbed = [_scrub_text(entry, secrets) for entry in output.traceback]
            output.traceback = [text for text, _ in scrubbed]
            output.evalue, n = _scrub_text(output.evalue, secrets)
            in_tracebacks += sum(n for _, n in scrubbed)
            elsewhere += n
        elif "data" in output:
            for mime, value in list(output.data.items()):
                if isinstance(value, str):
                    output.data[mime], n = _scrub_text(value, secrets)
                    elsewhere += n
                elif mime.endswith("json") and _scrub_text(json.dumps(value), secrets)[1]:
                    output.data[mime] = {"removed": REMOVED_LINE}
                    elsewhere += 1
    return in_tracebacks, elsewhere


def _recorded(outputs, label: str) -> list[object]:
    answers = []
    for output in outputs:
        record = output.get("data", {}).get(ANSWER_MIME) if output.output_type in ("display_data", "execute_result") else None
        if isinstance(record, dict) and record.get("label") == label:
            answers.append(record.get("answer"))
    return answers


def mark_answers(cell, keys: list[AnswerKey]) -> list[str]:
    """Replace a concept cell's outputs by the grader's verdict on the answers it recorded; returns findings
    worth an instructor's look.

    The kernel's own results and displays are dropped (a hook could have published a score there); its
    printed text stays. A cell that raised keeps its error, which nbgrader scores 0 (e.g. no answer yet)."""
    if any(output.output_type == "error" for output in cell.outputs):
        return []
    findings = []
    own_results = [o for o in cell.outputs if o.output_type in ("execute_result", "display_data")
                   and ANSWER_MIME not in o.get("data", {})]
    if own_results:
        findings.append("published a result of its own in a concept cell (dropped)")
    results = []
    for key in keys:
        distinct = {json.dumps(answer, sort_keys=True) for answer in _recorded(cell.outputs, key.label)}
        if not distinct:
            problem = "no answer was recorded"
        elif len(distinct) > 1:
            problem = "several different answers were recorded for one question"
            findings.append(f"recorded {len(distinct)} different answers to {key.label}")
        else:
            answer = json.loads(distinct.pop())
            if key.kind == "indices" and isinstance(answer, list):
                answer = set(answer)
            problem = answer_problem(answer, expected=key.expected, kind=key.kind, options=key.options,
                                     rel_tol=key.rel_tol, mistakes=key.mistakes)
        # Named as check_answer names it, so the student sees the same table either way.
        results.append(CaseResult("answer" if len(keys) == 1 else key.label, problem is None, problem or ""))
    points = sum(key.points for key in keys)
    score = round(sum(key.points for key, r in zip(keys, results) if r.passed), 2)
    title = ", ".join(key.label for key in keys)
    outputs = [o for o in cell.outputs if o.output_type == "stream"]
    outputs.append({"output_type": "stream", "name": "stdout", "text": format_table(title, results, score, points) + "\n"})
    if score > 0:  # nbgrader reads the first numeric result as the score
        outputs.append({"output_type": "execute_result", "execution_count": cell.execution_count, "metadata": {},
                        "data": {"text/plain": f"{score:g}"}})
    if score < points:
        message = f"{sum(not r.passed for r in results)} of {len(results)} checks failed for {title}: see the table above."
        outputs.append({"output_type": "error", "ename": "CheckFailed", "evalue": message,
                        "traceback": [f"CheckFailed: {message}"]})
    from nbformat import from_dict

    cell.outputs = [from_dict(output) for output in outputs]
    return findings


TABLE_HEADER = re.compile(r"^.+: ([0-9.]+) / ([0-9.]+) points$", re.M)


def unvouched_results(cell) -> int:
    """Drop the numeric results of a code grade cell that no check printed; returns how many.

    A check prints its table ("Title: 2.4 / 3 points", then one line per case) before it publishes a
    score, and the score it publishes is the table's. A number published without such a table just
    before it (from an IPython hook, say) would otherwise be read by nbgrader as the cell's score."""
    dropped, last_table_score = 0, None
    kept = []
    for output in cell.outputs:
        if output.output_type == "stream" and output.name == "stdout":
            headers = TABLE_HEADER.findall(output.text)
            if headers:
                last_table_score = float(headers[-1][0])
        elif output.output_type == "execute_result":
            try:
                value = float(str(output.data.get("text/plain", "")).strip())
            except ValueError:
                value = None
            if value is not None and (last_table_score is None or value != last_table_score):
                dropped += 1
                continue
        kept.append(output)
    cell.outputs = kept
    return dropped


class SealFeedback(NbGraderPreprocessor):
    """Autograde stage: mark concept answers, remove quoted hidden lines, cut hidden parts from the source."""

    def preprocess(self, nb, resources):
        originals = self._original_sources(nb, resources)
        secrets = quoted_lines(originals)
        findings: list[str] = []
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", f"cell {index}")
            original = originals.get(grade_id)
            keys = [key for part in hidden_parts(original) for key in answer_keys(part)] if original else []
            if keys:
                findings += [f"{grade_id}: {finding}" for finding in mark_answers(cell, keys)]
            elif is_grade(cell) and unvouched_results(cell):
                findings.append(f"{grade_id}: published a score that no check printed (dropped)")
            _, quoted = scrub_outputs(cell, secrets)
            if quoted:
                findings.append(f"{grade_id}: output quoted hidden tests ({quoted} lines removed from feedback)")
            if is_grade(cell):
                cell.source = visible_part(cell.source)
        nb.metadata["gradelib"] = {"hidden_tests_sealed": True, "findings": findings}
        return nb, resources

    @staticmethod
    def _original_sources(nb, resources) -> dict[str, str]:
        """grade_id -> the source of each grade cell as the instructor wrote it (from the gradebook)."""
        from nbgrader.api import Gradebook

        info = resources["nbgrader"]
        sources = {}
        # No fallback to the executed cell's own source: it no longer holds the key, and a concept cell
        # left unmarked would show no numeric result, which nbgrader scores as full marks.
        with Gradebook(info["db_url"]) as gradebook:
            for cell in nb.cells:
                grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
                if cell.cell_type == "code" and grade_id and is_grade(cell):
                    sources[grade_id] = gradebook.find_source_cell(grade_id, info["notebook"], info["assignment"]).source
        return sources
