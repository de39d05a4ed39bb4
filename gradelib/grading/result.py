"""What the batch records for one student: a ``Status`` and a ``Result`` (one CSV row)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Status(str, Enum):
    """How grading one submission ended. A ``str``, so the CSV and JSON hold the value (``"out-of-memory"``)
    and a status compares equal to its value (``Status.OK == "ok"``)."""

    OK = "ok"                        # graded normally
    TAMPERED = "tampered"            # graded, but a locked cell was touched or the hidden-test seal found something
    TIMEOUT = "timeout"              # the notebook outran its time, or a cell ignored the interrupt
    OUT_OF_MEMORY = "out-of-memory"  # killed at the memory cap (the supervisor's, or the sandbox's control group)
    KERNEL_DIED = "kernel-died"      # the kernel exited on its own (os._exit, a crash)
    ERROR = "error"                  # nbgrader could not grade the notebook (its log says why)
    UNREADABLE = "unreadable"        # not a notebook: never graded

    def __str__(self) -> str:  # Python 3.12 formats a str-mixin Enum as "Status.OK" otherwise
        return self.value

    @property
    def graded(self) -> bool:
        """Whether nbgrader scored the notebook; any other status scores 0."""
        return self in (Status.OK, Status.TAMPERED)


@dataclass
class Result:
    student: str
    status: Status = Status.OK
    score: float = 0.0
    max_score: float = 0.0
    seconds: float = 0.0
    cells: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sandbox: str = "bwrap"                 # gradelib.grading.sandbox.jail(): "bwrap+cgroups", "bwrap" or "none"
    similarity: float | None = None        # highest similarity of the student's own exercise code ...
    similar_to: str = ""                   # ... and to what ("sdpa ~ gradelib.reference"): a flag, not a score
