#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a cycle.

Two graphs per crate, both must be acyclic:
- the top-level modules (`run`, `train`, `model`, ...): an edge A -> B when code in A names
  `crate::B` (a `use` or a path in an expression);
- the files of one top-level module (`model::backbone`, `model::vit`, ...): an edge when one
  names the other through `crate::`, `super::` or `self::`.
A parent's `mod`/`pub use` of its own children is its facade, not an import, so edges from a
`mod.rs` (or `lib.rs`) to its children are not counted. Test modules (`#[cfg(test)]` to the
end of the file) are skipped. Usage: module_cycles.py CRATE_SRC_DIR...
"""
import re
import sys
from pathlib import Path


def module_path(src: Path, file: Path) -> tuple:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip(text: str) -> str:
    """The code without comments, string contents and `#[cfg(test)] mod ... { }` blocks."""
    token = r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])'"
    text = re.sub(token, lambda m: '""' if m.group(0)[0] in "\"'" else "", text, flags=re.S)
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub\s+)?mod\s+\w+\s*\{", text)
        if not m:
            return text
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        text = text[: m.start()] + text[i:]


def expand_use(tree: str) -> list:
    """`a::{b::c, d}` -> ['a::b::c', 'a::d'] (nested groups allowed)."""
    tree = re.sub(r"\s+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        return [tree.split(" as ")[0]]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rfind("}")]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    out = []
    for item in filter(None, items):
        out += expand_use(prefix + item)
    return out


def imported_paths(text: str) -> list:
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths += expand_use(m.group(1))
    body = re.sub(r"\buse\s+[^;]+;", "", text)
    paths += re.findall(r"\b(?:crate|super|self)(?:::\w+)+", body)
    return paths


def resolve(path: str, here: tuple, modules: set):
    parts = path.replace("r#", "").split("::")
    if parts[0] == "crate":
        base, rest = (), parts[1:]
    elif parts[0] in ("super", "self"):
        # A module's path is the same whether it is `a/b.rs` or `a/b/mod.rs`: `self` is it,
        # each `super` its parent.
        base = here
        rest = parts
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    else:
        return None
    target = base
    for p in rest:
        if base + (p,) in modules or (target + (p,)) in modules:
            target = target + (p,)
        else:
            break
    return target


def cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []

    def visit(n):
        index[n] = low[n] = len(index)
        stack.append(n)
        on.add(n)
        for m in sorted(graph.get(n, ())):
            if m not in index:
                visit(m)
                low[n] = min(low[n], low[m])
            elif m in on:
                low[n] = min(low[n], index[m])
        if low[n] == index[n]:
            comp = []
            while True:
                m = stack.pop()
                on.discard(m)
                comp.append(m)
                if m == n:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for n in sorted(graph):
        if n not in index:
            visit(n)
    return out


def imports(src: Path):
    """(file, here, target, path) for each module named by another module's code: the edges
    of both graphs. Also used by scripts/architecture_doc.py."""
    files = {module_path(src, f): f for f in src.rglob("*.rs")}
    modules = set(files)
    for here, f in files.items():
        dir_module = f.name in ("mod.rs", "lib.rs", "main.rs")
        for path in imported_paths(strip(f.read_text())):
            target = resolve(path, here, modules)
            if target is None or target == here:
                continue
            if dir_module and target[: len(here)] == here:
                continue  # a facade naming its own children
            if not here or not target:
                continue
            yield f, here, target, path


def check(src: Path) -> list:
    top, inner, why = {}, {}, {}
    for f, here, target, path in imports(src):
        if here[0] != target[0]:
            top.setdefault(here[0], set()).add(target[0])
            why.setdefault((here[0], target[0]), []).append(f"{f.relative_to(src)}: {path}")
        else:
            inner.setdefault(here, set()).add(target)
            why.setdefault((here, target), []).append(f"{f.relative_to(src)}: {path}")
    problems = []
    for graph, kind in ((top, "modules"), (inner, "files")):
        for comp in cycles(graph):
            names = ", ".join("::".join(c) if isinstance(c, tuple) else c for c in comp)
            lines = [f"{src}: {kind} import each other: {names}"]
            for a in comp:
                for b in sorted(graph.get(a, ())):
                    if b in comp:
                        lines += [f"    {w}" for w in sorted(set(why[(a, b)]))]
            problems.append("\n".join(lines))
    return problems


def main():
    problems = []
    for src in sys.argv[1:]:
        problems += check(Path(src))
    for p in problems:
        print(p, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
