"""Finding the code in an answer: fenced blocks, the block of a language, its language.

What code critics (and plugins' critics) use to take the code out of a candidate.
"""

from redline.feedback_sources._code import (
    code_blocks,
    extract_code,
    extract_python,
    language_of,
)

__all__ = ["code_blocks", "extract_code", "extract_python", "language_of"]
