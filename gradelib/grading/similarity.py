"""Copy detection for instructors: how much of each student's exercise code is also in the reference or in a classmate's.

Students can read ``gradelib.reference`` and each other's notebooks. A check already catches an answer that
*calls* the reference; this module looks for answers that *copy* it, or copy each other. It uses MOSS's method
(Schleimer, Wilkerson and Aiken, SIGMOD 2003) as implemented by the ``copydetect`` package: each piece of code is
tokenised with pygments and normalised (every name becomes ``V``, ``F`` or ``O``, strings ``S``, comments and
whitespace dropped), its k-grams are hashed and winnowed into fingerprints, and the similarity of A to B is the
share of A's normalised code covered by fingerprints that B shares. Renaming variables and reformatting do not
change the normalised stream, so they do not hide a copy.

Only the student's **own** code in an exercise cell is compared: the lines that differ from the released
(student) notebook's cell. The signature, docstring and given lines every student starts from are left out, so
untouched skeletons match nothing, and an unanswered exercise gets no score.

The results are **flags for a human to read, never scores**: nothing here changes a grade. Short exercises have
few ways to be written, so independent correct answers can share code; ``reports/similarity-fp.json``
(``python -m gradelib.grading.similarity --measure-false-positives``) measures how much, on hand-written
independent solutions, and :data:`DEFAULT_THRESHOLD` is chosen from it.

Public API::

    exercise_sources(nb)                      -> {grade_id: the cell's source}, code exercise cells only
    own_code(source, released_source)         -> the lines of ``source`` that are not the released cell's
    reference_sources(released)               -> {grade_id: source of the reference implementation(s)}
    similarity_report(submissions, released)  -> SimilarityReport
    max_similarity(report)                    -> {student: (highest similarity or None, "grade_id ~ other")}
    write_html(report, path)                  -> path of a self-contained HTML page of the flagged matches
    flag_results(results, submissions, released, page)  the batch's step: both of the above, into Results and a page
"""

from __future__ import annotations

import argparse
import ast
import builtins
import difflib
import html
import importlib
import inspect
import io
import json
import keyword
import pkgutil
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import nbformat
import numpy as np
from copydetect import CodeFingerprint, compare_files
from copydetect.utils import highlight_overlap

#: copydetect's noise threshold k: matches shorter than this many characters of *normalised* code are ignored
#: (``x = torch.ones(T, T)`` normalises to ``V=V.V(V,V)``, 10 characters). copydetect's default.
NOISE_T = 25
#: copydetect's guarantee threshold: every match at least this long is found. Equal to NOISE_T means a winnowing
#: window of 1 (every k-gram is a fingerprint), copydetect's default; exercise cells are short, so it costs
#: nothing, and it keeps results independent of Python's per-process string hashing, which copydetect uses to
#: hash k-grams (with a wider window, which k-grams are kept would change from one run to the next).
GUARANTEE_T = 25
#: Flag a match when at least this share of a student's own code is found in the other code. Chosen from
#: reports/similarity-fp.json, the middle of the gap it measures: 56 independent correct solutions of the 11
#: exercises of notebooks 01 and 06 reach at most 0.47 of their code in the reference (median 0) and 0.30 in each
#: other, while disguised copies of the reference (renamed, docstrings and comments dropped, reformatted) keep
#: at least 0.86.
#: Caveat, in the same file: the solution notebook's own answers (same author as the reference, so not
#: independent) reach 0.83 for the positional encoding, a few lines of textbook formula: a flag, not a verdict.
DEFAULT_THRESHOLD = 0.7
#: The name a match with the reference implementation carries as its ``other``.
REFERENCE = "gradelib.reference"

_REPO = Path(__file__).resolve().parents[2]
_FIXTURES = _REPO / "tests" / "fixtures" / "independent_solutions"
_FP_REPORT = _REPO / "reports" / "similarity-fp.json"


# --------------------------------------------------------------------------------------------------------------
# What to compare


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def exercise_sources(nb) -> dict[str, str]:
    """``{grade_id: source}`` of the notebook's exercise cells: code cells marked ``solution`` in nbgrader's markup.

    Concept questions are solution cells too; :func:`similarity_report` scores only the cells whose released
    version defines a function or class (see :func:`defined_names`).
    """
    return {_nbgrader(c)["grade_id"]: c.get("source", "") for c in nb.get("cells", [])
            if c.get("cell_type") == "code" and _nbgrader(c).get("solution") and _nbgrader(c).get("grade_id")}


def defined_names(source: str) -> list[str]:
    """Names of the functions and classes a cell defines at its top level, in order (empty if it does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def own_code(source: str, released_source: str) -> str:
    """The lines of a student's cell that are not lines of the released cell (matched in order with difflib).

    What is left is what the student wrote: the signature, docstring, given lines and ``# YOUR CODE HERE`` that
    every student starts from are dropped. Returns "" for an untouched cell.
    """
    mine, given = source.splitlines(), released_source.splitlines()
    matcher = difflib.SequenceMatcher(None, [line.rstrip() for line in given], [line.rstrip() for line in mine],
                                      autojunk=False)
    kept = [line for tag, _, _, j1, j2 in matcher.get_opcodes() if tag in ("replace", "insert") for line in mine[j1:j2]]
    return "\n".join(kept)


def _reference_modules() -> list:
    import gradelib.reference as package
    return [importlib.import_module(f"{package.__name__}.{info.name}")
            for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name)]


def _source(obj) -> str:
    return textwrap.dedent(inspect.getsource(obj))


def _implementations(name: str, modules) -> list:
    """What ``name`` is in gradelib.reference: module-level functions and classes of that name, methods of that
    name of the modules' classes, and the private module-level helpers these call (``_expand``)."""
    found = []
    for module in modules:
        for obj in vars(module).values():
            if getattr(obj, "__module__", None) != module.__name__:
                continue                                   # imported from elsewhere: its own module lists it
            if getattr(obj, "__name__", None) == name and (inspect.isfunction(obj) or inspect.isclass(obj)):
                found.append(obj)
            elif inspect.isclass(obj) and inspect.isfunction(vars(obj).get(name)):
                found.append(vars(obj)[name])
    helpers = []
    for obj in found:
        functions = [obj] if inspect.isfunction(obj) else [f for f in vars(obj).values() if inspect.isfunction(f)]
        module = inspect.getmodule(obj)
        for function in functions:
            for used in function.__code__.co_names:
                helper = vars(module).get(used)
                if used.startswith("_") and inspect.isfunction(helper) and helper.__module__ == module.__name__:
                    helpers.append(helper)
    unique = {}
    for obj in found + helpers:
        unique.setdefault((obj.__module__, obj.__qualname__), obj)
    return list(unique.values())


def reference_sources(released) -> dict[str, str]:
    """``{grade_id: source}`` of the reference implementation(s) of each exercise of a released notebook.

    ``released`` is the student version of the notebook (a NotebookNode or a path to one). For each exercise
    cell, the names it defines (``def``/``class``) are looked up across every ``gradelib.reference`` module with
    :func:`inspect.getsource`: functions and classes of that name, methods of that name (the DDPM schedule's
    ``posterior_mean_variance`` is where the reference's maths lives), and the private helpers these call.
    Exercises with nothing of that name in the reference are left out.
    """
    if isinstance(released, (str, Path)):
        released = nbformat.read(str(released), as_version=4)
    modules = _reference_modules()
    sources = {}
    for grade_id, source in exercise_sources(released).items():
        objects = [obj for name in defined_names(source) for obj in _implementations(name, modules)]
        if objects:
            sources[grade_id] = "\n\n".join(_source(obj) for obj in objects)
    return sources


# --------------------------------------------------------------------------------------------------------------
# Comparing


@dataclass(frozen=True)
class Match:
    """How much of ``student``'s own code for ``grade_id`` is also in ``other`` (:data:`REFERENCE` or a student)."""

    student: str
    grade_id: str
    other: str
    similarity: float          # share of the student's own code (normalised) found in the other code
    other_similarity: float    # share of the other code found in the student's
    code: str                  # the student's own code
    other_code: str
    slices: tuple = field(default=((), ()), repr=False, compare=False)   # copydetect's (starts, ends) in each code

    @property
    def kind(self) -> str:
        return "reference" if self.other == REFERENCE else "peer"


@dataclass(frozen=True)
class ExerciseSimilarity:
    """One student's one exercise: its closest match in the reference and among the other students."""

    student: str
    grade_id: str
    code: str                  # the student's own code (see own_code)
    reference: Match | None    # None when the exercise has no reference implementation
    peer: Match | None         # None when no other student answered it

    def highest(self) -> Match | None:
        matches = [m for m in (self.reference, self.peer) if m is not None]
        return max(matches, key=lambda m: m.similarity) if matches else None


@dataclass
class SimilarityReport:
    """Per student and exercise, the highest similarity to the reference and to any other student.

    ``results`` holds only the exercises a student answered with enough code to fingerprint; everyone in
    ``students`` appears in :func:`max_similarity`, with None when nothing of theirs was scored.
    """

    students: list[str]
    grade_ids: list[str]
    results: dict[tuple[str, str], ExerciseSimilarity]
    threshold: float = DEFAULT_THRESHOLD
    noise_t: int = NOISE_T
    guarantee_t: int = GUARANTEE_T

    def flagged(self, threshold: float | None = None) -> list[Match]:
        """Matches with similarity ≥ threshold, highest first; a pair of students appears once per exercise."""
        threshold = self.threshold if threshold is None else threshold
        best: dict[tuple, Match] = {}
        for result in self.results.values():
            for match in (result.reference, result.peer):
                if match is None or match.similarity < threshold:
                    continue
                who = (match.student,) if match.kind == "reference" else tuple(sorted((match.student, match.other)))
                key = (match.grade_id, match.kind, who)
                if key not in best or match.similarity > best[key].similarity:
                    best[key] = match
        return sorted(best.values(), key=lambda m: (-m.similarity, m.grade_id, m.student, m.other))

    def records(self) -> list[dict]:
        """One JSON-ready row per scored (student, exercise): the two similarities and who the peer is."""
        rows = []
        for (student, grade_id), result in sorted(self.results.items()):
            rows.append({"student": student, "grade_id": grade_id,
                         "reference": None if result.reference is None else round(result.reference.similarity, 4),
                         "peer": None if result.peer is None else round(result.peer.similarity, 4),
                         "peer_student": None if result.peer is None else result.peer.other})
        return rows


def _fingerprint(code: str, name: str) -> CodeFingerprint:
    return CodeFingerprint(name, NOISE_T, GUARANTEE_T - NOISE_T + 1, language="python", fp=io.StringIO(code))


def _compare(student: str, grade_id: str, mine: CodeFingerprint, other: str, theirs: CodeFingerprint) -> Match:
    _, (similarity, other_similarity), slices = compare_files(mine, theirs)
    return Match(student, grade_id, other, float(similarity), float(other_similarity), mine.raw_code,
                 theirs.raw_code, slices)


def _own_fingerprints(submissions: Mapping[str, object], given: str, grade_id: str) -> dict[str, CodeFingerprint]:
    """Fingerprints of each student's own code for one exercise; students with too little code are left out."""
    prints = {}
    for student in sorted(submissions):
        code = own_code(exercise_sources(submissions[student]).get(grade_id, ""), given)
        fingerprint = _fingerprint(code, f"{student}/{grade_id}.py")
        if fingerprint.token_coverage > 0:          # shorter than NOISE_T normalised characters: nothing to say
            prints[student] = fingerprint
    return prints


def similarity_report(submissions: Mapping[str, object], released, *, references: Mapping[str, str] | None = None,
                      grade_ids: list[str] | None = None, threshold: float = DEFAULT_THRESHOLD) -> SimilarityReport:
    """Compare every student's own code, exercise by exercise, with the reference and with every other student.

    Args:
        submissions: ``{student: notebook}`` (NotebookNodes, as ``nbformat.read`` returns them).
        released: the released (student) version of the notebook, a NotebookNode or a path.
        references: ``{grade_id: source}``; default :func:`reference_sources` of ``released``.
        grade_ids: the exercises to compare; default every solution cell whose released version defines a
            function or class (concept-question answers are too short to compare).
        threshold: what :meth:`SimilarityReport.flagged` and :func:`write_html` flag by default.
    """
    if isinstance(released, (str, Path)):
        released = nbformat.read(str(released), as_version=4)
    given = exercise_sources(released)
    references = reference_sources(released) if references is None else references
    grade_ids = [g for g, source in given.items() if defined_names(source)] if grade_ids is None else list(grade_ids)
    results: dict[tuple[str, str], ExerciseSimilarity] = {}
    for grade_id in grade_ids:
        prints = _own_fingerprints(submissions, given.get(grade_id, ""), grade_id)
        reference = _fingerprint(references[grade_id], f"reference/{grade_id}.py") if references.get(grade_id) else None
        for student, mine in prints.items():
            ref_match = _compare(student, grade_id, mine, REFERENCE, reference) if reference is not None else None
            peers = [_compare(student, grade_id, mine, other, theirs) for other, theirs in prints.items() if other != student]
            peer = max(peers, key=lambda m: m.similarity) if peers else None
            results[(student, grade_id)] = ExerciseSimilarity(student, grade_id, mine.raw_code, ref_match, peer)
    return SimilarityReport(sorted(submissions), grade_ids, results, threshold)


def max_similarity(report: SimilarityReport) -> dict[str, tuple[float | None, str]]:
    """``{student: (value, what)}`` for one CSV column: the student's highest similarity over all exercises, to
    the reference or a classmate, and where it is (``"mha ~ gradelib.reference"``, ``"sdpa ~ bob"``).
    ``(None, "")`` for a student none of whose exercises could be compared (unanswered, or too short)."""
    best: dict[str, tuple[float | None, str]] = {student: (None, "") for student in report.students}
    for (student, grade_id), result in sorted(report.results.items()):
        match = result.highest()
        if match is not None and (best[student][0] is None or match.similarity > best[student][0]):
            best[student] = (round(match.similarity, 4), f"{grade_id} ~ {match.other}")
    return best


# --------------------------------------------------------------------------------------------------------------
# The HTML page


def flag_results(results: Mapping[str, object], submissions: Mapping[str, object], released, page: Path | None,
                 title: str = "Similarity report") -> None:
    """The last step of a batch: each student's highest similarity into their ``Result`` (``similarity``,
    ``similar_to``), and the HTML page of flagged pairs to ``page`` (when given)."""
    report = similarity_report(submissions, released)
    for student, (value, what) in max_similarity(report).items():
        if student in results:
            results[student].similarity, results[student].similar_to = value, what
    if page is not None:
        write_html(report, page, title=title)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
table.summary { border-collapse: collapse; } table.summary td, table.summary th { border: 1px solid #ccc; padding: .25em .6em; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
.pair pre { background: #f7f7f7; border: 1px solid #ddd; padding: .6em; overflow-x: auto; font-size: .85em; }
mark.left { background: #f2b6b6; } mark.right { background: #b6f2b6; }
.note { color: #555; max-width: 60em; }
"""


def _highlighted(code: str, slices, css_class: str) -> str:
    if len(slices) == 0 or np.size(slices) == 0:
        return html.escape(code)
    marked, _ = highlight_overlap(code, np.asarray(slices), f"<mark class='{css_class}'>", "</mark>", escape_html=True)
    return marked


def write_html(report: SimilarityReport, path, threshold: float | None = None, title: str = "Similarity report") -> Path:
    """Write one self-contained HTML page (no scripts, styles inline, nothing fetched) of the flagged matches.

    Lists every match at or above ``threshold`` (default the report's), highest first, with the student's own
    code and the other code side by side and the shared regions highlighted (copydetect's highlight_overlap).
    """
    threshold = report.threshold if threshold is None else threshold
    flagged = report.flagged(threshold)
    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='note'>{len(flagged)} match(es) at or above {threshold:.0%} of a student's own code "
             f"(the lines that differ from the released notebook), compared after normalising names, strings, "
             f"comments and layout (copydetect, k = {report.noise_t}). These are flags for a person to read, not "
             f"scores: short exercises can be written in few ways.</p>"]
    if flagged:
        parts.append("<table class='summary'><tr><th>#</th><th>exercise</th><th>student</th><th>matches</th>"
                     "<th>share of the student's code</th><th>share of the other</th></tr>")
        for i, m in enumerate(flagged, 1):
            parts.append(f"<tr><td><a href='#m{i}'>{i}</a></td><td>{html.escape(m.grade_id)}</td><td>{html.escape(m.student)}</td>"
                         f"<td>{html.escape(m.other)}</td><td>{m.similarity:.0%}</td><td>{m.other_similarity:.0%}</td></tr>")
        parts.append("</table>")
    for i, m in enumerate(flagged, 1):
        left, right = m.slices if len(m.slices) == 2 else ((), ())
        parts.append(f"<h2 id='m{i}'>{i}. {html.escape(m.grade_id)}: {html.escape(m.student)} ~ {html.escape(m.other)} "
                     f"({m.similarity:.0%} / {m.other_similarity:.0%})</h2><div class='pair'>"
                     f"<div><b>{html.escape(m.student)}</b><pre>{_highlighted(m.code, left, 'left')}</pre></div>"
                     f"<div><b>{html.escape(m.other)}</b><pre>{_highlighted(m.other_code, right, 'right')}</pre></div></div>")
    parts.append("</body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------------
# Measuring false positives on independent correct solutions


class _Rename(ast.NodeTransformer):
    def __init__(self, names: dict[str, str]):
        self.names = names

    def visit_Name(self, node):
        node.id = self.names.get(node.id, node.id)
        return node

    def visit_arg(self, node):
        node.arg = self.names.get(node.arg, node.arg)
        return node


def disguise(source: str) -> str:
    """A copy made to look different: every argument and local variable renamed, docstrings and comments dropped,
    layout rewritten (``ast.unparse``). Function, class and attribute names stay, as a working copy needs them."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    local = sorted({n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
                   | {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)})
    local = [name for name in local if name != "self" and not keyword.iskeyword(name) and not hasattr(builtins, name)]
    return ast.unparse(_Rename({name: f"renamed_{i}" for i, name in enumerate(local)}).visit(tree)) + "\n"


def _with_answer(released, grade_id: str, source: str):
    nb = nbformat.from_dict(json.loads(json.dumps(released)))
    for cell in nb.cells:
        if _nbgrader(cell).get("grade_id") == grade_id:
            cell.source = source
    return nb


def _spread(values) -> dict:
    values = list(values)
    return {"min": round(min(values), 4), "median": round(statistics.median(values), 4), "max": round(max(values), 4)}


def measure_false_positives(fixtures: Path = _FIXTURES, assignments: list[str] | None = None) -> dict:
    """Similarity of independent correct solutions to the reference and to each other, per exercise.

    ``fixtures/<assignment>/<grade_id>/<style>.py`` each hold one exercise cell written independently from the
    exercise's statement (tests/test_similarity.py proves each earns full marks). Each is put into the released
    notebook as one student's answer; for every exercise this reports the distribution (min, median, max) of
    the share of each solution's own code found in the reference, and in each other solution (every ordered
    pair), and, for contrast, what a verbatim and a disguised (:func:`disguise`) copy of the reference score, and
    what the solution notebook's answer scores (not independent: the reference's author wrote it).
    """
    out = {"method": f"copydetect {_copydetect_version()}: pygments tokens normalised, k-grams of k = NOISE_T = {NOISE_T} "
                     f"characters, winnowing window {GUARANTEE_T - NOISE_T + 1}; similarity = share of a student's "
                     "own code (lines not in the released notebook) covered by fingerprints the other code shares",
           "threshold": DEFAULT_THRESHOLD, "exercises": {}}
    for assignment_dir in sorted(p for p in Path(fixtures).iterdir() if p.is_dir()):
        assignment = assignment_dir.name
        if assignments is not None and assignment not in assignments:
            continue
        released = nbformat.read(str(_REPO / "course" / assignment / f"{assignment}.ipynb"), as_version=4)
        given, references = exercise_sources(released), reference_sources(released)
        solutions = exercise_sources(nbformat.read(str(_REPO / "solutions" / assignment / f"{assignment}.ipynb"), as_version=4))
        exercises = {}
        for grade_dir in sorted(p for p in assignment_dir.iterdir() if p.is_dir()):
            grade_id = grade_dir.name
            styles = {p.stem: p.read_text() for p in sorted(grade_dir.glob("*.py"))}
            prints = _own_fingerprints({style: _with_answer(released, grade_id, code) for style, code in styles.items()},
                                       given[grade_id], grade_id)
            reference = _fingerprint(references[grade_id], "reference.py")
            to_reference = {s: _compare(s, grade_id, fp, REFERENCE, reference).similarity for s, fp in prints.items()}
            pairs = [_compare(a, grade_id, prints[a], b, prints[b]).similarity for a in prints for b in prints if a != b]
            copies = {}
            for name, code in (("verbatim", references[grade_id]), ("disguised", disguise(references[grade_id])),
                               ("solution", solutions[grade_id])):
                mine = _own_fingerprints({name: _with_answer(released, grade_id, code)}, given[grade_id], grade_id)[name]
                copies[name] = round(_compare(name, grade_id, mine, REFERENCE, reference).similarity, 4)
            exercises[grade_id] = {
                "styles": len(styles),
                "to_reference": {**_spread(to_reference.values()), "by_style": {s: round(v, 4) for s, v in to_reference.items()}},
                "to_peers": {**_spread(pairs), "pairs": len(pairs)},
                "verbatim_reference_copy": copies["verbatim"],
                "disguised_reference_copy": copies["disguised"],
                "solution_notebook_to_reference": copies["solution"],
            }
        out["exercises"][assignment] = exercises
    every = [e for a in out["exercises"].values() for e in a.values()]
    out["summary"] = {"independent_max_to_reference": max(e["to_reference"]["max"] for e in every),
                      "independent_max_to_peers": max(e["to_peers"]["max"] for e in every),
                      "disguised_copy_min": min(e["disguised_reference_copy"] for e in every)}
    return out


def _copydetect_version() -> str:
    from importlib.metadata import version
    return version("copydetect")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradelib.grading.similarity", description=__doc__.split("\n")[0])
    parser.add_argument("--measure-false-positives", action="store_true",
                        help="measure independent solutions (tests/fixtures/independent_solutions) into --out")
    parser.add_argument("--out", type=Path, default=_FP_REPORT)
    args = parser.parse_args(argv)
    if not args.measure_false_positives:
        parser.print_help()
        return 2
    result = measure_false_positives()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for assignment, exercises in result["exercises"].items():
        for grade_id, e in exercises.items():
            print(f"{assignment} {grade_id:16} reference {e['to_reference']['min']:.2f} / {e['to_reference']['median']:.2f} / "
                  f"{e['to_reference']['max']:.2f}   peers {e['to_peers']['min']:.2f} / {e['to_peers']['median']:.2f} / "
                  f"{e['to_peers']['max']:.2f}   copies {e['verbatim_reference_copy']:.2f} {e['disguised_reference_copy']:.2f}"
                  f"   solution {e['solution_notebook_to_reference']:.2f}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
