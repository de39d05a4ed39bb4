"""nbgrader configuration for this course (run nbgrader, or `gradelib release`, from this folder).

solutions/<assignment>/<assignment>.ipynb is the instructor source (the only place notebooks are
edited); nbgrader's generate_assignment writes the student version to course/<assignment>/.
"""

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "genai-first-principles"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "course"
# Graders run notebooks in gradelib's `quick` profile (gradelib picks it when NBGRADER_EXECUTION is
# set). A cell that trains a small model can still take longer than nbgrader's 30 s default.
c.Execute.timeout = 300

# The same protections for every way of autograding (Formgrader, `nbgrader autograde`, `gradelib grade`):
# deleted test cells are put back, and the kernel runs in the quick profile without nbgrader's
# environment variables, so submitted code cannot tell it is being graded.
c.OverwriteCells.add_missing_cells = True
c.Execute.kernel_manager_class = "gradelib.grading.GradingKernelManager"

# Hidden tests stay hidden (gradelib/grading/hidden.py): concept answer keys never enter the kernel, and
# feedback shows neither hidden source nor any output line that quotes it. nbgrader's defaults, plus two steps.
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "nbgrader.preprocessors.OverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata",
    "gradelib.grading.hidden.SealHiddenTests",  # after the checksum check, which would warn about every sealed cell
]
c.Autograde.autograde_preprocessors = [
    "nbgrader.preprocessors.Execute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "gradelib.grading.hidden.SealFeedback",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
