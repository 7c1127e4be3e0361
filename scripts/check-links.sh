#!/usr/bin/env bash
# Link check: every relative link in the repository's Markdown files points at a file or
# directory that exists, and every `#anchor` (in the same file or in another Markdown file)
# names a heading there, with GitHub's anchor rules (lower case, punctuation dropped, spaces
# to `-`, `-1`, `-2` .. for repeated headings; explicit `<a name=..>` / `id=".."` count too).
# Prints `file:line: target (reason)` for each broken link; exit 1 if any, 0 otherwise.
#
#   scripts/check-links.sh [DIR]        # default: the repository root
#   scripts/check-links.sh --self-test  # checks the checker on a temp tree
#
# Read: inline links and images `[text](target "title")`, `<target>` inside them, and
# reference definitions `[ref]: target`. Not read: fenced code blocks, inline code spans,
# links with a scheme (`http:`, `https:`, `mailto:` ..), and everything under `target/`,
# `.git/` and `node_modules/`. An anchor into a file that is not Markdown (e.g. `#L10`) is not
# checked, only the file.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

exec python3 - "$@" <<'PY'
import os, re, sys, tempfile, unicodedata
from urllib.parse import unquote

SKIP_DIRS = {"target", ".git", "node_modules"}
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
REF_DEF = re.compile(r"^ {0,3}\[([^\]]+)\]:[ \t]*(<[^>]*>|\S+)")
HTML_ANCHOR = re.compile(r"""<a\s[^>]*?(?:name|id)\s*=\s*["']([^"']+)["']|\sid\s*=\s*["']([^"']+)["']""", re.I)


def strip_code_spans(line):
    """The line with inline code spans blanked (same length, so columns stay)."""
    out, i, n = [], 0, len(line)
    while i < n:
        if line[i] == "`":
            j = i
            while j < n and line[j] == "`":
                j += 1
            ticks = line[i:j]
            end = line.find(ticks, j)
            if end < 0:
                out.append(line[i:j])
                i = j
                continue
            out.append(" " * (end + len(ticks) - i))
            i = end + len(ticks)
        else:
            out.append(line[i])
            i += 1
    return "".join(out)


def text_lines(path):
    """(line number, text) of the lines outside fenced code blocks."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    fence = None
    for no, line in enumerate(lines, 1):
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)[0] * len(m.group(1))
                continue
            yield no, line
        elif m and m.group(1).startswith(fence) and line.strip() == m.group(1):
            fence = None


def heading_text_to_anchor(text):
    """GitHub's slug of a heading's text."""
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", text)  # images: their alt text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").strip().lower()
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "-_" or cat[0] in "LN" or cat == "Mn":
            out.append(ch)
        elif ch == " ":
            out.append("-")
    return "".join(out)


_anchor_cache = {}


def anchors(path):
    if path in _anchor_cache:
        return _anchor_cache[path]
    seen, found = {}, set()
    prev = None
    for no, line in text_lines(path):
        for m in HTML_ANCHOR.finditer(line):
            found.add(m.group(1) or m.group(2))
        m = ATX.match(line)
        text = None
        if m:
            text = m.group(2)
        elif prev is not None and prev.strip() and SETEXT.match(line) and not ATX.match(prev):
            if not prev.lstrip().startswith(("|", "-", "*", ">")):
                text = prev.strip()
        prev = line
        if text is None:
            continue
        slug = heading_text_to_anchor(text)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    _anchor_cache[path] = found
    return found


def link_targets(line):
    """Targets of the inline links and images on a line (code spans already blanked)."""
    i = 0
    while True:
        j = line.find("](", i)
        if j < 0:
            return
        k, depth = j + 2, 1
        while k < len(line) and depth:
            if line[k] == "\\":
                k += 2
                continue
            depth += {"(": 1, ")": -1}.get(line[k], 0)
            k += 1
        inner = line[j + 2 : k - 1 if depth == 0 else k].strip()
        i = j + 2
        if not inner:
            continue
        if inner.startswith("<"):
            end = inner.find(">")
            yield inner[1:end] if end > 0 else inner[1:]
        else:
            yield inner.split()[0]


def check_target(md, root, target):
    """None if the link is fine, else the reason."""
    if not target or SCHEME.match(target) or target.startswith("//"):
        return None
    path, _, anchor = target.partition("#")
    path = unquote(path.split("?")[0])
    if path:
        base = root if path.startswith("/") else os.path.dirname(md)
        dest = os.path.normpath(os.path.join(base, path.lstrip("/")))
        if not os.path.exists(dest):
            return "no such file or directory"
    else:
        dest = md
    if anchor and os.path.isfile(dest) and dest.lower().endswith((".md", ".markdown")):
        if unquote(anchor).lower() not in anchors(dest):
            return f"no heading with anchor #{anchor} in {os.path.relpath(dest, root)}"
    return None


def markdown_files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if name.lower().endswith((".md", ".markdown")):
                yield os.path.join(dirpath, name)


def check(root, quiet=False):
    root = os.path.abspath(root)
    broken = 0
    files = 0
    for md in markdown_files(root):
        files += 1
        for no, line in text_lines(md):
            plain = strip_code_spans(line)
            targets = list(link_targets(plain))
            m = REF_DEF.match(plain)
            if m:
                t = m.group(2)
                targets.append(t[1:-1] if t.startswith("<") else t)
            for t in targets:
                why = check_target(md, root, t)
                if why:
                    broken += 1
                    print(f"{os.path.relpath(md, root)}:{no}: {t} ({why})")
    if not quiet:
        if broken:
            print(f"check-links: {broken} broken link(s) in {files} Markdown files", file=sys.stderr)
        else:
            print(f"check-links: {files} Markdown files, no broken relative link", file=sys.stderr)
    return 1 if broken else 0


def self_test():
    files = {
        "README.md": (
            "# Top title\n\n## Two words: `code` and (more)!\n\n## Dup\n\n## Dup\n\n"
            "Setext heading\n--------------\n\n<a name=\"explicit\"></a>\n\n"
            "[ok file](docs/page.md) [ok dir](docs) [ok anchor](#two-words-code-and-more)\n"
            "[ok dup](#dup-1) [ok setext](#setext-heading) [ok html](#explicit)\n"
            "[ok other](docs/page.md#page-heading) ![ok img](docs/pic.svg) [ok root](/docs/page.md)\n"
            "[ok ext](https://example.com/missing) [ok mail](mailto:a@b.c) [ok title](docs/page.md \"T\")\n"
            "[ok rs line](src/lib.rs#L3) [ok angle](<docs/page.md>) [ok nested](docs/page.md#page-heading) (x)\n"
            "`[not a link](missing-in-code-span.md)`\n\n"
            "```text\n[not a link](missing-in-fence.md)\n```\n\n"
            "[ref]: docs/page.md\n"
            "[BAD1](docs/missing.md) [BAD2](#no-such-anchor)\n"
            "[BAD3](docs/page.md#missing) [BAD4](#dup-2)\n"
            "[badref]: nowhere.md\n"
        ),
        "docs/page.md": "# Page heading\n\n[BAD5](../README.md#top) [ok up](../README.md#top-title)\n",
        "docs/pic.svg": "<svg/>",
        "src/lib.rs": "//! x\n",
        "target/doc/skipped.md": "[not checked](nowhere.md)\n",
    }
    want = {
        "README.md:26: docs/missing.md",
        "README.md:26: #no-such-anchor",
        "README.md:27: docs/page.md#missing",
        "README.md:27: #dup-2",
        "README.md:28: nowhere.md",
        "docs/page.md:3: ../README.md#top",
    }
    ok = True
    with tempfile.TemporaryDirectory() as root:
        for rel, text in files.items():
            p = os.path.join(root, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(text)
        import io, contextlib
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            status = check(root, quiet=True)
        got = {line.split(" (")[0] for line in buf.getvalue().splitlines()}
        if got != want:
            print(f"self-test: reported {sorted(got)}\n           want     {sorted(want)}")
            ok = False
        if status != 1:
            print("self-test: check() did not fail on broken links")
            ok = False
        print("self-test: the checker's output on a tree with six broken links:")
        print(buf.getvalue(), end="")
        # Fix them: the check passes.
        with open(os.path.join(root, "README.md")) as f:
            text = f.read()
        text = text[: text.index("[BAD1]")]
        with open(os.path.join(root, "README.md"), "w") as f:
            f.write(text)
        with open(os.path.join(root, "docs/page.md"), "w") as f:
            f.write("# Page heading\n\n[ok up](../README.md#top-title)\n")
        _anchor_cache.clear()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            status = check(root, quiet=True)
        if status != 0:
            print(f"self-test: check() failed without a broken link:\n{buf.getvalue()}")
            ok = False
    print("self-test: ok" if ok else "self-test: FAILED")
    return 0 if ok else 1


def main(argv):
    if argv[:1] == ["--self-test"]:
        return self_test()
    if len(argv) > 1 or (argv and not os.path.isdir(argv[0])):
        print("usage: check-links.sh [DIR] | --self-test", file=sys.stderr)
        return 2
    return check(argv[0] if argv else ".")


sys.exit(main(sys.argv[1:]))
PY
