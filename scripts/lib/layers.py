#!/usr/bin/env python3
"""The layering check of `src/`: modules import only downward, and no two files import each
other through any loop.

Every `crate::…` and `super::…` path in a file is an edge from that file's module to the module
the path names. Two rules:
  * each top-level module has a layer (LAYERS, lowest first); an edge to a higher layer fails;
  * the file graph has no cycle (strongly connected components of one file only).
Run from the repository root; exits 1 with the offending edges or loops.
"""
import re
import sys
from pathlib import Path

# Lowest first. A module may import its own layer and the ones before it.
LAYERS = [
    # foundations: no domain knowledge
    ["error", "ids", "clock", "validate", "config", "db", "telemetry", "metrics", "changes", "persisted", "log_gate"],
    # who is asking, what they may see, secrets at rest, the audit trail
    ["auth", "authz", "audit", "secrets", "keys"],
    # caches (every cache goes through `cache`) and the change fan-out that invalidates them
    ["cache", "response_cache"],
    ["pubsub"],
    # the domains
    ["registries", "sync", "k8s", "monitoring", "retention"],
    # the services a request may use (registered as schema data)
    ["state"],
    ["graphql"],
    ["http"],
    ["server", "cli", "lib", "main"],
]
RANK = {m: i for i, ms in enumerate(LAYERS) for m in ms}


def module_of(path: Path) -> tuple:
    parts = list(path.relative_to("src").with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return tuple(parts)


def expand(prefix: tuple, text: str):
    """Paths of a `use` tree after `crate::` or `super::` (handles `{a, b::{c, d}}`)."""
    text = text.strip()
    if text.startswith("{"):
        depth, cur, items = 0, "", []
        for ch in text[1:]:
            if ch == "{":
                depth += 1
            elif ch == "}":
                if depth == 0:
                    break
                depth -= 1
            if ch == "," and depth == 0:
                items.append(cur)
                cur = ""
            else:
                cur += ch
        items.append(cur)
        for it in items:
            yield from expand(prefix, it)
        return
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(\s*::\s*)?", text)
    if not m:
        return
    head = prefix + (m.group(1),)
    if m.group(2):
        yield from expand(head, text[m.end():])
    else:
        yield head


def main() -> int:
    files = {module_of(p): p for p in Path("src").rglob("*.rs")}
    mods = set(files)
    edges = {}
    for mod, path in files.items():
        src = re.sub(r"//[^\n]*", "", path.read_text())
        # Unit tests may reach anywhere.
        src = re.split(r"#\[cfg\(test\)\]\s*mod \w+", src)[0]
        targets = set()
        for m in re.finditer(r"\b(crate|super)::", src):
            base = () if m.group(1) == "crate" else mod[:-1] if path.name != "mod.rs" or True else mod
            if m.group(1) == "super":
                base = mod[:-1]
            for full in expand(base, src[m.end():m.end() + 400]):
                # the longest known module prefix
                for n in range(len(full), 0, -1):
                    if full[:n] in mods:
                        if full[:n] != mod and full[:n] != mod[:n]:
                            targets.add(full[:n])
                        break
        edges[mod] = targets
    errors = []
    for a, ts in sorted(edges.items()):
        for b in sorted(ts):
            ra, rb = RANK.get(a[0]), RANK.get(b[0])
            if ra is None or rb is None:
                errors.append(f"no layer for {a[0] if ra is None else b[0]} (add it to LAYERS)")
            elif rb > ra:
                errors.append(f"upward import: {'::'.join(a)} -> {'::'.join(b)}")
    # Tarjan's strongly connected components.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    for comp in sccs:
        errors.append("import loop among: " + ", ".join("::".join(c) for c in comp))
    for e in sorted(set(errors)):
        print(e)
    if errors:
        return 1
    print(f"layers: {len(edges)} modules, {sum(map(len, edges.values()))} imports, no loop, none upward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
