#!/usr/bin/env python3
"""Checks movq's module graph: no import loops between modules, and no import from a lower
layer into a higher one. Reads every `crate::` / `super::` path in src/ (uses and inline
paths; `#[cfg(test)]` modules excluded), resolves it to the module (file) it names, and
prints the violations; exit code 1 if there are any.

Usage: python3 scripts/check_layers.py [--graph]
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"

# Top-level components, lowest first. A component may import only components of a lower
# layer (never one of its own layer or above). The binary (main, cli) sits on top.
LAYERS = [
    {"error"},
    {"tensor", "metrics"},
    {"kernels", "io"},
    {"ops", "testing"},
    {"model"},
    {"checkpoint"},
    {"verify"},
    {"trace"},
    {"lib"},
    {"main", "cli"},
]


def module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return "::".join(parts) or "lib"


def strip_tests(text: str) -> str:
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    return text[: m.start()] if m else text


def strip_comments(text: str) -> str:
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def component(module: str) -> str:
    return module.split("::")[0]


def layer(comp: str) -> int:
    for i, names in enumerate(LAYERS):
        if comp in names:
            return i
    raise SystemExit(f"component {comp} has no layer in scripts/check_layers.py")


def main() -> int:
    # Test modules in files of their own (`#[cfg(test)] mod tests;`) may reach any layer.
    files = sorted(f for f in SRC.rglob("*.rs") if f.name != "tests.rs")
    modules = {module_of(f): f for f in files}
    edges = {m: set() for m in modules}
    for mod, f in modules.items():
        text = strip_comments(strip_tests(f.read_text()))
        here = mod.split("::") if mod not in ("lib", "main") else []
        paths = []
        for m in re.finditer(r"\b(crate|super)((?:::\w+)+)(?:::\{([^}]*)\})?", text):
            base, rest, group = m.group(1), m.group(2), m.group(3)
            # `super` is the parent of the module the file defines (for a mod.rs, of its folder).
            prefix = [] if base == "crate" else here[:-1]
            segs = prefix + rest.strip(":").split("::")
            if group:
                for item in group.split(","):
                    paths.append(segs + item.strip().split("::"))
            paths.append(segs)
        for segs in paths:
            for n in range(len(segs), 0, -1):
                target = "::".join(segs[:n])
                if target in modules and target != mod:
                    edges[mod].add(target)
                    break
    if "--graph" in sys.argv:
        for m in sorted(edges):
            print(f"{m} -> {', '.join(sorted(edges[m]))}")
    problems = []
    for m, targets in edges.items():
        cm = "cli" if m.startswith("cli") else component(m)
        for t in targets:
            ct = component(t)
            if ct != cm and layer(ct) >= layer(cm):
                problems.append(f"upward or sideways import: {m} -> {t}")
    # Cycles between modules (Tarjan's strongly connected components).
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    for c in sccs:
        problems.append("import loop: " + " <-> ".join(c))
    for p in problems:
        print(p)
    print(f"{len(modules)} modules, {sum(len(t) for t in edges.values())} imports, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
