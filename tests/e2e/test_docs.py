"""Every YAML example the project shows is a configuration `pilotfish -t` accepts.

Checked: the fenced ```yaml blocks of README.md, docs/**/*.md and k8s/**/*.md,
and every conf/**/*.yaml file. The convention (docs/HACKING.md, "Examples in
the docs"):

- a block is a whole configuration file, checked as it is;
- a block whose first line is `# fragment` shows only some top-level keys: it
  is checked with `upstreams: {app: {endpoints: ["127.0.0.1:3000"]}}` appended
  (unless it has its own `upstreams:`), so its routes may name `app`;
- a block whose first line starts with `# not pilotfish` is another program's
  YAML (a Kubernetes manifest, a Prometheus configuration) and is skipped.

`${VAR}` without a default is taken from DOC_ENV below.

Also checked: relative links in the markdown files, and the operator docs
against the code (every configuration key, metric and admin endpoint that
exists is documented, and nothing that does not exist is).
"""

import glob
import os
import re
import subprocess
import tempfile

import pf

FRAGMENT = "# fragment"
FOREIGN = "# not pilotfish"
BASE_UPSTREAM = 'upstreams: {app: {endpoints: ["127.0.0.1:3000"]}}\n'

# The variables the examples use without a default.
DOC_ENV = {
    "PILOTFISH_ADMIN_TOKEN": "doc-test-token",
    "APP_ADDR": "127.0.0.1:3000",
}


def yaml_blocks(path):
    """(first line number, text) of each fenced ```yaml block of a markdown file."""
    blocks = []
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```yaml":
            start = i + 1
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            assert j < len(lines), "%s:%d: unterminated ```yaml block" % (path, i + 1)
            blocks.append((start + 1, "\n".join(lines[start:j]) + "\n"))
            i = j
        i += 1
    return blocks


def examples(root):
    """(file, first line, text) of every example under root: markdown blocks and
    conf files."""
    out = []
    md = [os.path.join(root, "README.md")]
    md += sorted(glob.glob(os.path.join(root, "docs", "**", "*.md"), recursive=True))
    md += sorted(glob.glob(os.path.join(root, "k8s", "**", "*.md"), recursive=True))
    for path in md:
        rel = os.path.relpath(path, root)
        for line, text in yaml_blocks(path):
            out.append((rel, line, text))
    for path in sorted(glob.glob(os.path.join(root, "conf", "**", "*.yaml"), recursive=True)):
        out.append((os.path.relpath(path, root), 1, open(path, encoding="utf-8").read()))
    return out


def check(rel, line, text, tmpdir):
    """None when pilotfish -t accepts the example (or it is not pilotfish's),
    else a message naming the example and pilotfish's errors, their positions
    turned into FILE:LINE:COL of the document."""
    first = text.lstrip("\n").split("\n", 1)[0].strip()
    if first.startswith(FOREIGN):
        return None
    if first == FRAGMENT and not re.search(r"^upstreams\s*:", text, re.M):
        text = text + BASE_UPSTREAM
    path = os.path.join(tmpdir, "example.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    env = dict(os.environ)
    env.update(DOC_ENV)
    r = subprocess.run([pf._bin("PILOTFISH_BIN", "bin/pilotfish"), "-t", "-c", path],
                       capture_output=True, text=True, env=env, timeout=20)
    pf.check_sanitizer_output("pilotfish -t " + rel, r.stderr, r.returncode)
    if r.returncode == 0:
        return None
    errors = re.sub(re.escape(path) + r":(\d+):(\d+)",
                    lambda m: "%s:%d:%s" % (rel, line + int(m.group(1)) - 1, m.group(2)),
                    (r.stderr + r.stdout).strip())
    kind = "fragment" if first == FRAGMENT else "whole file"
    return "%s:%d (%s) rejected by pilotfish -t:\n    %s" % (rel, line, kind,
                                                             errors.replace("\n", "\n    "))


def test_docs_every_yaml_example_is_accepted():
    found = examples(pf.ROOT)
    assert len(found) >= 10, "only %d examples found: is the extractor broken?" % len(found)
    with tempfile.TemporaryDirectory() as tmp:
        failures = [m for m in (check(f, n, t, tmp) for f, n, t in found) if m]
    assert not failures, "\n".join(failures)


def test_docs_checker_rejects_a_bad_example():
    """The check above can fail: a wrong key, a route to an unknown upstream
    and a fragment without its marker are each reported with file and line."""
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "docs"))
        with open(os.path.join(tmp, "README.md"), "w") as f:
            f.write("```yaml\nupstreams:\n  app: {endpoints: [\"127.0.0.1:1\"]}\n```\n")
        with open(os.path.join(tmp, "docs", "x.md"), "w") as f:
            f.write("text\n\n```yaml\n# fragment\nlimits: { max_header_sise: 1KiB }\n```\n"
                    "```yaml\nfilters: { gzip: { level: 6 } }\n```\n"
                    "```yaml\n# fragment\nroutes:\n  - { match: { prefix: / }, upstream: nope }\n```\n"
                    "```yaml\n# not pilotfish: Kubernetes\nspec: {}\n```\n")
        found = examples(tmp)
        assert [(f, n) for f, n, _ in found] == [("README.md", 2), ("docs/x.md", 4),
                                                  ("docs/x.md", 8), ("docs/x.md", 11),
                                                  ("docs/x.md", 16)], found
        msgs = [check(f, n, t, tmp) for f, n, t in found]
    assert msgs[0] is None and msgs[4] is None, msgs
    assert "docs/x.md:4 (fragment)" in msgs[1] and "docs/x.md:5:" in msgs[1], msgs[1]
    assert "max_header_sise" in msgs[1], msgs[1]
    assert "docs/x.md:8 (whole file)" in msgs[2] and "upstream" in msgs[2], msgs[2]
    assert "docs/x.md:11 (fragment)" in msgs[3] and "nope" in msgs[3], msgs[3]


def broken_links(root):
    """'FILE:LINE: target' for each relative markdown link whose file does not
    exist, and each mention of a design document that is not in the tree."""
    out = []
    md = [os.path.join(root, "README.md")]
    for sub in ("docs", "k8s", "bench", "tests"):
        md += sorted(glob.glob(os.path.join(root, sub, "**", "*.md"), recursive=True))
    for path in md:
        rel = os.path.relpath(path, root)
        for n, line in enumerate(open(path, encoding="utf-8"), 1):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"[a-z]+:", target) or target.startswith("#"):
                    continue
                target = target.split("#", 1)[0]
                if not os.path.exists(os.path.join(os.path.dirname(path), target)):
                    out.append("%s:%d: %s" % (rel, n, target))
            for name in re.findall(r"\b(?:SPEC|ARCHITECTURE|STYLE)\.md\b", line):
                if not os.path.exists(os.path.join(root, name)):
                    out.append("%s:%d: %s (not in the repository)" % (rel, n, name))
    return out


def test_docs_links_point_at_files_that_exist():
    bad = broken_links(pf.ROOT)
    assert not bad, "\n".join(bad)


def test_docs_link_check_can_fail():
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "docs"))
        with open(os.path.join(tmp, "README.md"), "w") as f:
            f.write("[ok](docs/a.md) [web](https://x) [anchor](#a)\n[bad](docs/b.md#x)\n"
                    "See SPEC.md.\n")
        with open(os.path.join(tmp, "docs", "a.md"), "w") as f:
            f.write("[up](../README.md)\n")
        bad = broken_links(tmp)
    assert bad == ["README.md:2: docs/b.md", "README.md:3: SPEC.md (not in the repository)"], bad


# ---- the docs against the code: every key, metric and endpoint, and no other ----

def code_text(root):
    parts = []
    for sub in ("proxy", "filters"):
        for path in sorted(glob.glob(os.path.join(root, sub, "**", "*.c"), recursive=True)):
            parts.append(open(path, encoding="utf-8").read())
    return "\n".join(parts)


def docs_text(root):
    paths = [os.path.join(root, "README.md")]
    paths += sorted(glob.glob(os.path.join(root, "docs", "**", "*.md"), recursive=True))
    return "\n".join(open(p, encoding="utf-8").read() for p in paths
                     if not p.endswith("HACKING.md"))


def metric_names_in_code(code):
    return set(re.findall(r'"((?:pilotfish|process)_[a-z_]+?)(?:_bucket|_sum|_count)?[ {"]', code))


def contract_gaps(root):
    """What the code has and the operator docs do not mention, and what the
    docs present as existing that the code does not have."""
    code, docs = code_text(root), docs_text(root)
    gaps = []
    # configuration keys: the key tables ({"name", PF_CONF_...})
    for key in sorted(set(re.findall(r'\{"([a-z_]+)",\s*PF_CONF_', code))):
        if not re.search(r"[`.\s]%s[`:]" % key, docs):
            gaps.append("configuration key '%s' is not documented" % key)
    # metrics
    in_code = metric_names_in_code(code)
    for name in sorted(in_code):
        if name not in docs:
            gaps.append("metric %s is not documented" % name)
    for name in sorted(set(re.findall(r"\b(pilotfish_[a-z_]+)", docs))):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if base not in in_code and name not in in_code:
            gaps.append("metric %s is documented but does not exist" % name)
    # admin endpoints: the paths admin.c compares, and the ones the docs name
    routes = set(re.findall(r'strcmp\(path, "(/[a-z/]*)"\)', code))
    ops = open(os.path.join(root, "docs", "operations.md"), encoding="utf-8").read()
    for path in sorted(routes):
        if "`GET %s`" % path not in ops and "`POST %s`" % path not in ops:
            gaps.append("admin endpoint %s is not in docs/operations.md" % path)
    every = docs + open(os.path.join(root, "k8s", "README.md"), encoding="utf-8").read()
    for path in sorted(set(re.findall(r"\b(?:GET|POST) (/[a-z_/]+)", every))):
        if path not in routes:
            gaps.append("admin endpoint %s is documented but does not exist" % path)
    return gaps


def test_docs_every_key_metric_and_endpoint_is_documented():
    gaps = contract_gaps(pf.ROOT)
    assert not gaps, "\n".join(gaps)


def test_docs_contract_check_can_fail():
    with tempfile.TemporaryDirectory() as tmp:
        for d in ("proxy", "docs", "k8s"):
            os.makedirs(os.path.join(tmp, d))
        with open(os.path.join(tmp, "proxy", "x.c"), "w") as f:
            f.write('{"listen", PF_CONF_CUSTOM}, {"secret_knob", PF_CONF_INT},\n'
                    'add("pilotfish_a_total{", 1); hist("pilotfish_b_seconds_bucket{");\n'
                    'if (strcmp(path, "/ready") == 0) {} if (strcmp(path, "/hidden") == 0) {}\n')
        with open(os.path.join(tmp, "README.md"), "w") as f:
            f.write("`listen`; pilotfish_a_total; pilotfish_b_seconds_count; pilotfish_gone\n")
        with open(os.path.join(tmp, "docs", "operations.md"), "w") as f:
            f.write("| `GET /ready` | ok |\n")
        with open(os.path.join(tmp, "k8s", "README.md"), "w") as f:
            f.write("POST /cache/purge\n")
        gaps = contract_gaps(tmp)
    assert gaps == ["configuration key 'secret_knob' is not documented",
                    "metric pilotfish_gone is documented but does not exist",
                    "admin endpoint /hidden is not in docs/operations.md",
                    "admin endpoint /cache/purge is documented but does not exist"], gaps


# ---- the command line against its docs and manual page ----

def help_options(args):
    r = subprocess.run([pf._bin("PILOTFISH_BIN", "bin/pilotfish")] + args + ["--help"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", r.stdout))


def cli_gaps(root, main_opts, inject_opts):
    """Options --help lists that the docs or the manual page do not, and options
    the inject docs show that --help does not list."""
    gaps = []
    ops = open(os.path.join(root, "docs", "operations.md"), encoding="utf-8").read()
    dep = open(os.path.join(root, "docs", "deployment.md"), encoding="utf-8").read()
    man = open(os.path.join(root, "docs", "man", "pilotfish.8"), encoding="utf-8").read()
    man = man.replace("\\-", "-")
    for opt in sorted(main_opts):
        if opt not in ops:
            gaps.append("%s is not in docs/operations.md" % opt)
        if opt not in man:
            gaps.append("%s is not in pilotfish(8)" % opt)
    for opt in sorted(inject_opts):
        if opt not in dep:
            gaps.append("inject %s is not in docs/deployment.md" % opt)
        if opt not in man:
            gaps.append("inject %s is not in pilotfish(8)" % opt)
    section = dep[dep.index("### pilotfish inject"):dep.index("### What inject adds")]
    for opt in sorted(set(re.findall(r"`(?:-\w, )?(--[a-z-]+)", section))):
        if opt not in inject_opts:
            gaps.append("docs/deployment.md shows inject %s, which does not exist" % opt)
    return gaps


def test_docs_cli_options_are_documented():
    gaps = cli_gaps(pf.ROOT, help_options([]), help_options(["inject"]))
    assert not gaps, "\n".join(gaps)


def test_docs_cli_check_can_fail():
    gaps = cli_gaps(pf.ROOT, {"--config", "--secret-flag"}, {"--port", "--hidden"})
    assert gaps == ["--secret-flag is not in docs/operations.md",
                    "--secret-flag is not in pilotfish(8)",
                    "inject --hidden is not in docs/deployment.md",
                    "inject --hidden is not in pilotfish(8)",
                    "docs/deployment.md shows inject --config, which does not exist",
                    "docs/deployment.md shows inject --config-map, which does not exist",
                    "docs/deployment.md shows inject --help, which does not exist",
                    "docs/deployment.md shows inject --image, which does not exist",
                    "docs/deployment.md shows inject --legacy-sidecar, which does not exist",
                    "docs/deployment.md shows inject --probes-port, which does not exist",
                    "docs/deployment.md shows inject --proxy-port, which does not exist"], gaps
