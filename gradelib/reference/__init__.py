"""Readable reference implementations, one module per topic of the course.

Notebooks import the building blocks they reuse from here, e.g.
``from gradelib.reference.attention import MultiHeadAttention, TransformerBlock``.
"""

from gradelib.reference import attention

__all__ = ["attention"]
