#!/usr/bin/env bash
# Import-cycle check: the top-level modules of each library crate form a DAG (DESIGN.md, "Shape
# of the codebase"). For each crate source directory (default: cache-runtime/src and
# cache-macros/src) it builds the graph module -> module and prints every cycle
# (`a -> b -> a`), with the file:line of each edge on a cycle. Exit 1 if any, 0 otherwise.
#
#   scripts/check-module-dag.sh [--edges] [SRC_DIR ...]   # --edges also prints the whole graph
#   scripts/check-module-dag.sh --self-test                # checks the checker on a temp crate
#
# What counts as an edge a -> b: any file of top-level module `a` (a.rs, a/mod.rs, a/x.rs,
# a/x/y.rs ...; files are found by following `mod` declarations from lib.rs, `#[path]`
# honoured, plus any .rs file not reached, named by its path) names `crate::b` (in `use`,
# `use crate::{b, ..}` groups, or a path in code), `super::..::b` that climbs to the crate root,
# or `crate::Item` where lib.rs re-exports `Item` from `b` (`pub use b::Item`). Comments, doc
# comments, string and char literals and the bodies of `quote!`, `quote_spanned!`,
# `parse_quote!` and `parse_quote_spanned!` (generated or parsed code, not this crate's imports)
# are not read. Not edges: a -> a (so `super::` inside a submodule, a parent's `mod x;` and
# `pub use self::x::..` of its own children), and anything lib.rs (the crate root) names.
# Code inside `#[cfg(test)]` modules counts; an edge seen only there is marked [test only].
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

exec python3 - "$@" <<'PY'
import os, re, sys, tempfile

QUOTE_MACROS = {"quote", "quote_spanned", "parse_quote", "parse_quote_spanned"}
MAX_CYCLES = 500  # per crate; the strongly connected groups are always printed in full


def tokenize(src):
    """Rust tokens as (kind, text, line); comments and literals dropped (kind 'lit' kept as a
    placeholder so that `x!("crate::a")` stays a macro call with an argument)."""
    toks = []
    i, n, line = 0, len(src), 1
    ident_re = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
    raw_re = re.compile(r'(?:b|c)?r(#*)"')
    while i < n:
        c = src[i]
        if c == "\n":
            line += 1
            i += 1
            continue
        if c.isspace():
            i += 1
            continue
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
            continue
        if src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    line += src[i] == "\n"
                    i += 1
            continue
        m = raw_re.match(src, i)
        if m and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            end = src.find('"' + m.group(1), m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            line += src.count("\n", i, end)
            toks.append(("lit", "", line))
            i = end
            continue
        if c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            line += src.count("\n", i, j)
            toks.append(("lit", "", line))
            i = j + 1
            continue
        if c == "'":
            if i + 1 < n and src[i + 1] == "\\":  # '\n', '\'', '\u{..}'
                j = i + 2
                while j < n and src[j] != "'":
                    j += 2 if src[j] == "\\" else 1
                toks.append(("lit", "", line))
                i = j + 1
                continue
            if i + 2 < n and src[i + 2] == "'":  # 'a'
                toks.append(("lit", "", line))
                i += 3
                continue
            m = ident_re.match(src, i + 1)  # a lifetime or label
            i = m.end() if m else i + 1
            continue
        if src.startswith("r#", i) and ident_re.match(src, i + 2):
            m = ident_re.match(src, i + 2)
            toks.append(("ident", m.group(0), line))
            i = m.end()
            continue
        m = ident_re.match(src, i)
        if m:
            toks.append(("ident", m.group(0), line))
            i = m.end()
            continue
        if c.isdigit():
            m = re.compile(r"[0-9][0-9A-Za-z_]*").match(src, i)
            toks.append(("lit", "", line))
            i = m.end()
            continue
        if src.startswith("::", i):
            toks.append(("punct", "::", line))
            i += 2
            continue
        toks.append(("punct", c, line))
        i += 1
    return toks


OPEN = {"(": ")", "[": "]", "{": "}"}


def skip_group(toks, i):
    """toks[i] is an opening delimiter: the index after its matching close."""
    depth = 0
    while i < len(toks):
        t = toks[i][1] if toks[i][0] == "punct" else None
        if t in OPEN:
            depth += 1
        elif t in (")", "]", "}"):
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def attrs_before(toks, i):
    """The token lists of the outer attributes (`#[..]`) before an item starting at toks[i]
    (visibility `pub`, `pub(crate)` ... skipped)."""
    j = i - 1
    if j >= 0 and toks[j][1] == ")":  # pub(crate), pub(in ..)
        depth = 0
        while j >= 0:
            if toks[j][1] == ")":
                depth += 1
            elif toks[j][1] == "(":
                depth -= 1
                if depth == 0:
                    break
            j -= 1
        j -= 1
    if j >= 0 and toks[j][1] == "pub":
        j -= 1
    out = []
    while j >= 0 and toks[j][1] == "]":
        depth, k = 0, j
        while k >= 0:
            if toks[k][1] == "]":
                depth += 1
            elif toks[k][1] == "[":
                depth -= 1
                if depth == 0:
                    break
            k -= 1
        if k >= 1 and toks[k - 1][1] == "#":
            out.append(toks[k + 1 : j])
            j = k - 2
        else:
            break
    return out


def is_cfg_test(attrs):
    for a in attrs:
        words = [t[1] for t in a]
        if words[:1] == ["cfg"] and "test" in words and "not" not in words:
            return True
    return False


def path_attr(attrs):
    for a in attrs:
        if len(a) >= 3 and a[0][1] == "path" and a[1][1] == "=":
            return a[2]
    return None


def parse_use_tree(toks, i, prefix, out):
    """Parses a use tree at toks[i]; appends (path, exported_name) to out; returns the index
    after it."""
    path = list(prefix)
    while i < len(toks):
        kind, t, _ = toks[i]
        if t == "{":
            i += 1
            while i < len(toks) and toks[i][1] != "}":
                i = parse_use_tree(toks, i, path, out)
                if i < len(toks) and toks[i][1] == ",":
                    i += 1
            return i + 1
        if t == "*":
            out.append((path, "*"))
            return i + 1
        if kind == "ident":
            path = path + [t]
            i += 1
            if i < len(toks) and toks[i][1] == "::":
                i += 1
                continue
            name = t
            if i + 1 < len(toks) and toks[i][1] == "as":
                name = toks[i + 1][1]
                i += 2
            if name == "self":
                name = path[-2] if len(path) >= 2 else "self"
            out.append((path, name))
            return i
        return i + 1
    return i


class Crate:
    def __init__(self, src_dir):
        self.src = src_dir
        self.files = {}  # path -> (module path list, is_test)
        self.root_file = None
        for name in ("lib.rs", "main.rs"):
            p = os.path.join(src_dir, name)
            if os.path.isfile(p):
                self.root_file = p
                break
        if self.root_file:
            self.walk(self.root_file, [], False)
        for dirpath, _, names in sorted(os.walk(src_dir)):
            for name in sorted(names):
                p = os.path.normpath(os.path.join(dirpath, name))
                if name.endswith(".rs") and p not in self.files:
                    rel = os.path.relpath(p, src_dir)[: -len(".rs")].split(os.sep)
                    if rel[-1] == "mod":
                        rel = rel[:-1]
                    if rel in (["lib"], ["main"]):
                        rel = []
                    self.files[p] = (rel, False)
        self.top = sorted({m[0] for m, _ in self.files.values() if m})

    def walk(self, path, modpath, is_test):
        path = os.path.normpath(path)
        if path in self.files or not os.path.isfile(path):
            return
        self.files[path] = (modpath, is_test)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        toks = tokenize(text)
        # `#[path = "x"]`: the tokenizer drops literals, so read the attribute from the text.
        base = os.path.basename(path)
        mod_rs = base in ("lib.rs", "main.rs", "mod.rs")
        here = os.path.dirname(path)
        child_dir = here if mod_rs else os.path.join(here, base[: -len(".rs")])
        stack = []  # inline modules: (name, depth at which it closes, is_test)
        depth = 0
        i = 0
        while i < len(toks):
            kind, t, line = toks[i]
            if t == "{":
                depth += 1
            elif t == "}":
                depth -= 1
                while stack and stack[-1][1] > depth:
                    stack.pop()
            elif kind == "ident" and t == "mod" and i + 2 < len(toks) and toks[i + 1][0] == "ident":
                name = toks[i + 1][1]
                attrs = attrs_before(toks, i)
                test = is_test or any(s[2] for s in stack) or is_cfg_test(attrs)
                if toks[i + 2][1] == "{":
                    stack.append((name, depth + 1, test))
                elif toks[i + 2][1] == ";":
                    inline = [s[0] for s in stack]
                    explicit = None
                    if path_attr(attrs) is not None:
                        m = re.search(
                            r'#\[\s*path\s*=\s*"([^"]*)"\s*\][^;]*?\bmod\s+' + re.escape(name) + r"\s*;",
                            text,
                        )
                        if m:
                            explicit = m.group(1)
                    if explicit is not None:
                        d = os.path.join(here, *inline) if inline else here
                        if inline and not mod_rs:
                            d = os.path.join(child_dir, *inline)
                        cands = [os.path.join(d, explicit)]
                    else:
                        d = os.path.join(child_dir, *inline)
                        cands = [os.path.join(d, name + ".rs"), os.path.join(d, name, "mod.rs")]
                    for c in cands:
                        if os.path.isfile(c):
                            self.walk(c, modpath + inline + [name], test)
                            break
            i += 1


def scan(crate):
    """Edges {(a, b): [(file, line, test_only)]}."""
    root_mods = set(crate.top)
    reexports = {}  # name re-exported by the crate root -> top-level module it comes from
    if crate.root_file:
        with open(crate.root_file, encoding="utf-8") as f:
            toks = tokenize(f.read())
        depth = 0
        for i, (kind, t, _) in enumerate(toks):
            if t == "{":
                depth += 1
            elif t == "}":
                depth -= 1
            elif t == "use" and depth == 0:
                uses = []
                parse_use_tree(toks, i + 1, [], uses)
                for p, name in uses:
                    p = p[1:] if p[:1] in (["self"], ["crate"]) else p
                    if p and p[0] in root_mods and name != "*":
                        reexports.setdefault(name, p[0])
    edges = {}

    def add(src_mod, target, file, line, test):
        if not src_mod or target is None or target == src_mod[0]:
            return
        edges.setdefault((src_mod[0], target), []).append((file, line, test))

    def resolve_root(toks, j):
        """toks[j] follows `crate::` (or a `super::` that reached the root): the top-level
        modules it names."""
        if j >= len(toks):
            return []
        if toks[j][1] == "{":
            uses = []
            parse_use_tree(toks, j, [], uses)
            names = {p[0] for p, _ in uses if p}
        else:
            names = {toks[j][1]}
        out = []
        for nm in sorted(names):
            if nm in root_mods:
                out.append(nm)
            elif nm in reexports:
                out.append(reexports[nm])
        return out

    for path, (modpath, file_test) in sorted(crate.files.items()):
        with open(path, encoding="utf-8") as f:
            toks = tokenize(f.read())
        rel = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
        stack = []  # inline modules: (name, depth at which it closes, is_test)
        depth = 0
        i = 0
        while i < len(toks):
            kind, t, line = toks[i]
            if t == "{":
                depth += 1
            elif t == "}":
                depth -= 1
                while stack and stack[-1][1] > depth:
                    stack.pop()
            elif (
                kind == "ident"
                and t in QUOTE_MACROS
                and i + 2 < len(toks)
                and toks[i + 1][1] == "!"
                and toks[i + 2][1] in OPEN
            ):
                i = skip_group(toks, i + 2)
                continue
            elif kind == "ident" and t == "mod" and i + 2 < len(toks) and toks[i + 1][0] == "ident":
                if toks[i + 2][1] == "{":
                    test = is_cfg_test(attrs_before(toks, i))
                    stack.append((toks[i + 1][1], depth + 1, test))
            elif kind == "ident" and t in ("crate", "super") and i + 1 < len(toks) and toks[i + 1][1] == "::":
                if i > 0 and toks[i - 1][1] == "::":
                    i += 1
                    continue
                here = modpath + [s[0] for s in stack]
                test = file_test or any(s[2] for s in stack)
                if t == "crate":
                    for target in resolve_root(toks, i + 2):
                        add(modpath, target, rel, line, test)
                    i += 2
                    continue
                j, up = i, 0
                while j + 1 < len(toks) and toks[j][1] == "super" and toks[j + 1][1] == "::":
                    up += 1
                    j += 2
                resolved = here[: max(0, len(here) - up)]
                if resolved:
                    add(modpath, resolved[0], rel, line, test)
                else:
                    for target in resolve_root(toks, j):
                        add(modpath, target, rel, line, test)
                i = j
                continue
            i += 1
    return edges


def sccs(nodes, adj):
    index, low, on, st, out = {}, {}, set(), [], []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        st.append(v)
        on.add(v)
        for w in adj.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = st.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            strong(v)
    return sorted(c for c in out if len(c) > 1)


def cycles(nodes, adj, limit):
    """Every elementary cycle (each once, starting at its smallest module), up to limit."""
    found = []
    order = {v: k for k, v in enumerate(sorted(nodes))}

    def dfs(start, v, path, seen):
        for w in sorted(adj.get(v, ())):
            if len(found) >= limit:
                return
            if w == start:
                found.append(path + [start])
            elif order[w] > order[start] and w not in seen:
                seen.add(w)
                dfs(start, w, path + [w], seen)
                seen.discard(w)

    for s in sorted(nodes):
        dfs(s, s, [s], {s})
    found.sort(key=lambda c: (len(c), c))
    return found


def check(src_dir, show_edges):
    crate = Crate(src_dir)
    edges = scan(crate)
    adj = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
    nodes = sorted(crate.top)
    if show_edges:
        print(f"{src_dir}: module graph ({len(edges)} edges)")
        for (a, b), occ in sorted(edges.items()):
            mark = "  [test only]" if all(o[2] for o in occ) else ""
            print(f"  {a} -> {b}{mark}   ({occ[0][0]}:{occ[0][1]})")
    groups = sccs(nodes, adj)
    found = cycles(nodes, adj, MAX_CYCLES)
    if not found:
        print(f"check-module-dag: {src_dir}: no cycle ({len(nodes)} modules, {len(edges)} edges)")
        return 0
    more = "+" if len(found) >= MAX_CYCLES else ""
    print(f"check-module-dag: {src_dir}: {len(found)}{more} cycle(s):")
    for c in found:
        print("  " + " -> ".join(c))
    print(f"  modules that depend on each other (strongly connected groups):")
    for g in groups:
        print("    {" + ", ".join(g) + "}")
    on_cycle = sorted({(c[k], c[k + 1]) for c in found for k in range(len(c) - 1)})
    print("  edges on a cycle (first occurrence; [test only]: only #[cfg(test)] code):")
    for a, b in on_cycle:
        occ = edges[(a, b)]
        mark = "  [test only]" if all(o[2] for o in occ) else ""
        extra = f" (+{len(occ) - 1} more)" if len(occ) > 1 else ""
        print(f"    {a} -> {b}: {occ[0][0]}:{occ[0][1]}{extra}{mark}")
    return 1


def self_test():
    """A temp crate with a cycle hidden among the things that must not count."""
    files = {
        "lib.rs": "mod a;\nmod b;\nmod c;\n#[path = \"d_impl.rs\"]\npub mod d;\n"
        "pub use a::{A, Other as Renamed};\npub use self::c::C;\n",
        # a -> b (grouped use), b -> a (path in code): the cycle.
        "a.rs": "use crate::{b::B, c};\npub struct A;\npub struct Other;\n",
        "b.rs": "pub struct B;\nfn f() { let _ = crate::a::A; }\n",
        # c: none of these is an edge (comments, strings, quote!, submodule super::, children).
        "c.rs": "//! see crate::a::A\n/// crate::b::B\n// use crate::a;\n/* crate::a /* nested */ crate::b */\n"
        "mod inner;\npub use self::inner::C;\n"
        "fn g() -> &'static str { let _ = 'x'; let _ = '\\''; \"crate::a\" }\n"
        "fn h() -> &'static str { r#\"crate::b \"quoted\" \"# }\n"
        "fn q() { let _ = quote! { crate::a::A }; }\n",
        "c/inner.rs": "use super::g;\npub struct C;\nfn k() { super::h(); }\n",
        # d (file d_impl.rs): a test-only edge to c via a root re-export; c does not name d.
        "d_impl.rs": "#[cfg(test)]\nmod tests {\n    use crate::C;\n    use super::*;\n}\n",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, body in files.items():
            p = os.path.join(tmp, "src", name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(body)
        src = os.path.join(tmp, "src")
        crate = Crate(src)
        edges = scan(crate)
        got = {k: all(o[2] for o in v) for k, v in edges.items()}
        want = {("a", "b"): False, ("a", "c"): False, ("b", "a"): False, ("d", "c"): True}
        ok = True
        if sorted(crate.top) != ["a", "b", "c", "d"]:
            print(f"self-test: modules {sorted(crate.top)}, want a, b, c, d")
            ok = False
        if got != want:
            print(f"self-test: edges {sorted(got.items())}\n           want  {sorted(want.items())}")
            ok = False
        adj = {}
        for a, b in edges:
            adj.setdefault(a, set()).add(b)
        found = cycles(crate.top, adj, MAX_CYCLES)
        if found != [["a", "b", "a"]]:
            print(f"self-test: cycles {found}, want [a -> b -> a]")
            ok = False
        print("self-test: the checker's output on a crate with the cycle a -> b -> a:")
        status = check(src, False)
        if status != 1:
            print("self-test: check() did not fail on a cycle")
            ok = False
        os.remove(os.path.join(src, "b.rs"))
        with open(os.path.join(src, "b.rs"), "w") as f:
            f.write("pub struct B; // crate::a::A\n")
        if check(src, False) != 0:
            print("self-test: check() failed without a cycle")
            ok = False
    print("self-test: ok" if ok else "self-test: FAILED")
    return 0 if ok else 1


def main(argv):
    if argv[:1] == ["--self-test"]:
        return self_test()
    show_edges = "--edges" in argv
    dirs = [a for a in argv if a != "--edges"]
    for a in dirs:
        if a.startswith("-"):
            print(f"usage: check-module-dag.sh [--edges] [SRC_DIR ...] | --self-test", file=sys.stderr)
            return 2
    dirs = dirs or ["cache-runtime/src", "cache-macros/src"]
    status = 0
    for d in dirs:
        if not os.path.isdir(d):
            print(f"check-module-dag: {d}: not a directory", file=sys.stderr)
            return 2
        status |= check(d, show_edges)
    if status:
        print("check-module-dag: FAILED: import cycles between modules (see above)")
    return status


sys.exit(main(sys.argv[1:]))
PY
