#!/usr/bin/env python3
"""Fails when a module of a crate imports from a module that imports it (issue 11).

A cycle such as `driver/mod.rs` using `reads::PendingRead` while `driver/reads.rs` uses
`super::Driver` means neither file can be read (or moved) without the other; shared types belong
in a leaf module that both import. The compiler allows such cycles, so this script finds them.

How: starting from each crate root (lib.rs, main.rs, bin/*.rs, bin/*/main.rs), follow the `mod`
declarations to know every module, its file and its inline submodules. In each file, comments,
strings and char literals are blanked out, then every path that starts with `crate`, `super`,
`self` or the name of a submodule is resolved to the module it names: `use` trees are expanded
(`use a::{b, c::d}`), and paths written inline (`crate::task::spawn(...)`) count too. A path
names the deepest module it walks through, so `crate::storage::StorageError` names `storage`
(whose mod.rs re-exports it), not `storage/error.rs`. `mod x;` itself is not an import, and
`pub(in path)` is visibility, not an import. Then every strongly connected component of more than
one module is a cycle, and is printed with the lines that make it.

Usage: scripts/check-module-cycles.py [SRC_DIR ...]  (default: node/src client/src operator/src)
"""

import os
import re
import sys

DEFAULT_SRC = ["node/src", "client/src", "operator/src"]

# Cycles known and scheduled to go, by crate root and the modules in the cycle, with the reason
# they still stand. An allowed cycle that grows (another module joins it) fails like a new one;
# one that is gone is reported, so that its line here is deleted.
ALLOWED = {}


def blank(text):
    """Returns `text` with comments, string and char literals replaced by spaces (newlines kept,
    so that line numbers still hold)."""
    out = []
    i, n = 0, len(text)

    def keep_newlines(s):
        return "".join("\n" if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(keep_newlines(text[i:j]))
            i = j
        elif (m := re.match(r'b?r(#*)"', text[i:i + 300])) and (
            i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(keep_newlines(text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(keep_newlines(text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a, 'static).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:i + 16])
            if m:
                out.append(" " * m.end())
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Module:
    def __init__(self, path, file, parent):
        self.path = path  # tuple of names from the crate root
        self.file = file  # the file that holds its body
        self.parent = parent
        self.children = {}  # name -> Module


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


def expand_use_tree(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]; `as` renames are dropped."""
    tree = re.sub(r"\s+", "", tree)
    results = []

    def split_top(s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        return parts

    def walk(prefix, s):
        brace = s.find("{")
        if brace < 0:
            s = re.sub(r"as\w+$", "", s) if "as" in s and re.search(r"\bas\b", s) else s
            results.append(prefix + s)
            return
        head, inner = s[:brace], s[brace + 1:s.rfind("}")]
        for part in split_top(inner):
            walk(prefix + head, part)

    walk("", tree)
    return results


class Crate:
    def __init__(self, root_file):
        self.root_file = root_file
        self.modules = []
        self.root = self.load(root_file, (), None, is_root=True)

    def load(self, file, path, parent, is_root=False, mod_rs=False):
        module = Module(path, file, parent)
        self.modules.append(module)
        with open(file, encoding="utf-8") as f:
            module.raw = f.read()
        module.text = blank(module.raw)
        # Directory in which this module's file submodules live.
        base = os.path.dirname(file)
        if not (is_root or mod_rs):
            base = os.path.join(base, os.path.splitext(os.path.basename(file))[0])
        module.base = base
        self.scan_mods(module, module.text, 0, len(module.text), base, module)
        return module

    def scan_mods(self, module, text, start, end, base, owner):
        """Finds `mod x;` and `mod x { ... }` between start and end of owner's text."""
        pos = start
        pat = re.compile(r"\bmod\s+(\w+)\s*([;{])")
        while True:
            m = pat.search(text, pos, end)
            if not m:
                return
            name = m.group(1)
            if m.group(2) == ";":
                candidates = [os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")]
                found = next((c for c in candidates if os.path.exists(c)), None)
                if found:
                    child = self.load(found, owner.path + (name,), owner,
                                      mod_rs=found.endswith("mod.rs"))
                    owner.children[name] = child
                pos = m.end()
            else:
                # An inline module: its body runs to the matching brace.
                depth, j = 1, m.end()
                while j < end and depth:
                    if text[j] == "{":
                        depth += 1
                    elif text[j] == "}":
                        depth -= 1
                    j += 1
                child = Module(owner.path + (name,), module.file, owner)
                child.raw, child.text = module.raw, module.text
                child.span = (m.end(), j - 1)
                child.base = os.path.join(base, name)
                self.modules.append(child)
                owner.children[name] = child
                self.scan_mods(module, text, m.end(), j - 1, child.base, child)
                pos = j

    def resolve(self, module, segments):
        """The module a path names, walking `crate`/`super`/`self`/child names; None if the
        path does not start inside this crate."""
        if not segments:
            return None
        first = segments[0]
        if first == "crate":
            cur = self.root
        elif first == "super":
            cur = module.parent
        elif first == "self":
            cur = module
        elif first in module.children:
            cur = module.children[first]
        else:
            return None
        for seg in segments[1:]:
            if cur is None:
                return None
            if seg == "super":
                cur = cur.parent
            elif seg == "self":
                continue
            elif seg in cur.children:
                cur = cur.children[seg]
            else:
                break
        return cur

    def own_spans(self, module):
        """The text ranges of `module`'s file that belong to it, not to an inline submodule."""
        start, end = getattr(module, "span", (0, len(module.text)))
        holes = sorted(c.span for c in module.children.values() if hasattr(c, "span"))
        spans, pos = [], start
        for h_start, h_end in holes:
            spans.append((pos, h_start))
            pos = h_end
        spans.append((pos, end))
        return spans

    def edges(self):
        """(from, to, line) for every path in a module that names another module."""
        found = []
        for module in self.modules:
            text = module.text
            for s, e in self.own_spans(module):
                chunk = text[s:e]
                # Visibility (`pub(in crate::x)`) and macro paths (`$crate::`) are not imports.
                chunk = re.sub(r"pub\s*\(\s*in\s+[\w:\s]+\)",
                               lambda m: " " * len(m.group(0)), chunk)
                chunk = chunk.replace("$crate", "      ")
                paths = []
                for m in re.finditer(r"\buse\s+([^;]+);", chunk):
                    for p in expand_use_tree(m.group(1)):
                        paths.append((p, s + m.start()))
                    chunk = chunk[:m.start()] + " " * (m.end() - m.start()) + chunk[m.end():]
                for m in re.finditer(r"(?<![\w:])(\w+(?:\s*::\s*\w+)+)", chunk):
                    paths.append((m.group(1), s + m.start()))
                for p, pos in paths:
                    segs = [x for x in re.split(r"\s*::\s*", p.strip()) if x]
                    target = self.resolve(module, segs)
                    if target is not None and target is not module:
                        found.append((module, target, line_of(text, pos), p.strip()))
        return found


def sccs(nodes, adj):
    """Tarjan's strongly connected components."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj.get(v, ()):
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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return out


def crate_roots(src):
    roots = [os.path.join(src, f) for f in ("lib.rs", "main.rs")]
    bindir = os.path.join(src, "bin")
    if os.path.isdir(bindir):
        for entry in sorted(os.listdir(bindir)):
            p = os.path.join(bindir, entry)
            roots.append(p if entry.endswith(".rs") else os.path.join(p, "main.rs"))
    return [r for r in roots if os.path.isfile(r)]


def name(module):
    label = "::".join(("crate",) + module.path)
    return f"{label} ({module.file})"


def main(argv):
    srcs = argv[1:] or DEFAULT_SRC
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    failed, checked, allowed_seen = False, 0, set()
    for src in srcs:
        for root in crate_roots(src):
            crate = Crate(root)
            checked += len(crate.modules)
            edges = crate.edges()
            adj = {}
            for a, b, _, _ in edges:
                adj.setdefault(a, set()).add(b)
            for comp in sccs(crate.modules, adj):
                if len(comp) < 2:
                    continue
                key = (root, frozenset("::".join(m.path) for m in comp))
                if key in ALLOWED:
                    allowed_seen.add(key)
                    print(f"module cycles: allowed for now in {root}: "
                          f"{', '.join(sorted(key[1]))} ({ALLOWED[key]})")
                    continue
                failed = True
                members = set(comp)
                print(f"module cycle in the crate at {root}:")
                for m in sorted(comp, key=lambda m: m.path):
                    print(f"  {name(m)}")
                for a, b, line, p in edges:
                    if a in members and b in members:
                        print(f"    {a.file}:{line}: `{p}` -> {'::'.join(('crate',) + b.path)}")
    for key in ALLOWED.keys() - allowed_seen:
        if any(key[0].startswith(src.rstrip("/") + "/") for src in srcs):
            print(f"module cycles: the allowed cycle {', '.join(sorted(key[1]))} in {key[0]} "
                  "is gone; delete it from ALLOWED")
    if failed:
        sys.stdout.flush()
        print("module cycles: a module imports from a module that imports it (see above); "
              "move what both need into a leaf module", file=sys.stderr)
        return 1
    what = "no other cycle" if allowed_seen else "none"
    print(f"module cycles: {what} ({checked} modules in {', '.join(srcs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
