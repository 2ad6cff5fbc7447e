#!/usr/bin/env python
"""Write docs/course.md from the course map (profond/course/map.yaml).

    python scripts/course_md.py            # regenerate docs/course.md
    python scripts/course_md.py --check    # exit 1 if docs/course.md is not up to date

The page (coverage summary, then one table per chapter) is built by
:func:`profond.course.docs_markdown`; tests/test_course_map.py checks it is current.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profond.course import docs_markdown, total_coverage  # noqa: E402

DOCS = ROOT / "docs" / "course.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that docs/course.md is current")
    args = parser.parse_args(argv)
    text = docs_markdown()
    if args.check:
        current = DOCS.read_text(encoding="utf-8") if DOCS.is_file() else None
        if current != text:
            print(f"{DOCS.relative_to(ROOT)} is stale: run `python scripts/course_md.py`", file=sys.stderr)
            return 1
        print(f"{DOCS.relative_to(ROOT)} is up to date")
        return 0
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    tmp = DOCS.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(DOCS)
    t = total_coverage()
    print(f"wrote {DOCS.relative_to(ROOT)}: {t['total']} rows ({t['done']} done, {t['partial']} partial, "
          f"{t['planned']} planned)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
