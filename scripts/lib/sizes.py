#!/usr/bin/env python3
"""Size limits of `src/`: no function over 120 lines and no file over 900, tests excepted
(`#[cfg(test)]` modules do not count). A `// size: <why>` comment on the line just above a
function, or in the first 10 lines of a file, excuses it.
Run from the repository root; exits 1 listing what is over.
"""
import re
import sys
from pathlib import Path

MAX_FN, MAX_FILE = 120, 900
FN = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def code_lines(text: str) -> list:
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if re.match(r"\s*#\[cfg\(test\)\]", line) and i + 1 < len(lines) and re.match(
            r"\s*(pub\s+)?mod\s+\w+", lines[i + 1]
        ):
            return lines[:i]
    return lines


def functions(lines: list):
    """(name, first line, length) of each fn, by brace matching from its signature."""
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, opened = 0, False
        for j in range(i, len(lines)):
            code = re.sub(r'"(\\.|[^"\\])*"', '""', lines[j].split("//")[0])
            depth += code.count("{") - code.count("}")
            opened = opened or "{" in code
            if opened and depth <= 0:
                yield m.group(7), i, j - i + 1
                break
            if not opened and code.rstrip().endswith(";"):
                break


def main() -> int:
    over = []
    for path in sorted(Path(sys.argv[1] if len(sys.argv) > 1 else "src").rglob("*.rs")):
        text = path.read_text()
        lines = code_lines(text)
        excused_file = any("// size:" in l for l in text.split("\n")[:10])
        if len(lines) > MAX_FILE and not excused_file:
            over.append(f"{path}: {len(lines)} lines (limit {MAX_FILE})")
        for name, start, length in functions(lines):
            if length > MAX_FN and not (start > 0 and "// size:" in lines[start - 1]):
                over.append(f"{path}:{start + 1}: fn {name} is {length} lines (limit {MAX_FN})")
    for o in over:
        print(o)
    if over:
        return 1
    print(f"sizes: every function within {MAX_FN} lines, every file within {MAX_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
