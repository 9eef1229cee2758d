"""Results → one self-contained HTML page: what the loop did, item by item.

`load_results` reads what redline wrote (a batch output, a ``redline compare`` output,
a ``redline refine --json`` result); `render_report` turns it into a page whose styles,
script, plots (inline SVG) and data are all inside the file, so it opens from disk or a
mail attachment with no network; `write_report` does both and writes the file
atomically. ``redline report`` and ``redline show`` are the command-line faces.

```python
from redline.report import write_report

write_report("answers.jsonl", "report.html")
```
"""

from __future__ import annotations

from pathlib import Path

from redline.report._data import line_diff
from redline.report._html import render_report
from redline.report._load import Entry, Results, load_results
from redline.report._stats import best_score, draft_score

__all__ = ["Entry", "Results", "best_score", "draft_score", "line_diff", "load_results",
           "render_report", "write_report"]


def write_report(source: str | Path, output: str | Path, *, title: str | None = None
                 ) -> Results:
    """Read `source` and write its report to `output` (replaced atomically).

    Returns:
        What was read (to say how many items the report holds).

    Raises:
        ConfigError: `source` is not a results file redline can read.
        OSError: `output` cannot be written.
    """
    from redline._files import write_output

    results = load_results(source)
    write_output(output, render_report(results, title=title))
    return results
