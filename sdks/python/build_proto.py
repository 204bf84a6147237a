"""Generates the SDK's gRPC code from the repository's `proto/` with grpcio-tools.

protoc writes modules named after the proto packages (`supervisor.v1.tasks_pb2`); they
are rewritten to live inside this package (`supervisor_client._proto.supervisor.v1`), so
the SDK adds no top-level `supervisor` package to a user's environment. Type stubs
(`.pyi`) come from mypy-protobuf.

Used by setup.py when a wheel is built, and by hand for development:

    python build_proto.py            # writes src/supervisor_client/_proto
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "supervisor_client._proto"
PROTO_DIR_ENV = "SUPERVISOR_PROTO_DIR"

# `from supervisor.v1 import tasks_pb2 as ...` and the module names protobuf gives its
# message classes ('supervisor.v1.tasks_pb2'): the only places a module path appears.
_IMPORT = re.compile(r"^from supervisor\.v1 import ", re.MULTILINE)
_MODULE_NAME = re.compile(r"'supervisor\.v1\.(\w+_pb2)'")


def proto_dir() -> Path:
    """Where the `.proto` files are: $SUPERVISOR_PROTO_DIR, else the repository's."""
    candidates = []
    if os.environ.get(PROTO_DIR_ENV):
        candidates.append(Path(os.environ[PROTO_DIR_ENV]))
    candidates += [HERE / "proto", HERE.parent.parent / "proto"]
    for candidate in candidates:
        if (candidate / "supervisor" / "v1").is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise SystemExit(
        f"no supervisor/v1/*.proto under {tried}: build from the repository "
        f"(sdks/python) or set {PROTO_DIR_ENV} to its proto/ folder"
    )


def _plugin(name: str) -> str:
    """The path of a protoc plugin installed beside this Python (mypy-protobuf's)."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        path = Path(folder) / name
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: pip install mypy-protobuf")
    return found


def rewrite(text: str) -> str:
    """Moves a generated module's imports of its siblings into this package."""
    text = _IMPORT.sub(f"from {PACKAGE}.supervisor.v1 import ", text)
    return _MODULE_NAME.sub(rf"'{PACKAGE}.supervisor.v1.\1'", text)


def generate(out: Path) -> list[Path]:
    """Writes the generated package to `out` (replacing what was there); returns its files."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as err:
        raise SystemExit(f"grpcio-tools is needed to build the SDK: {err}") from err
    source = proto_dir()
    protos = sorted(str(p.relative_to(source)) for p in (source / "supervisor" / "v1").glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{source}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_out=quiet:{tmp}",
            f"--mypy_grpc_out=quiet:{tmp}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {source}")
        if out.exists():
            shutil.rmtree(out)
        written = []
        for path in sorted(Path(tmp).rglob("*.py*")):
            target = out / path.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rewrite(path.read_text()))
            written.append(target)
    for folder in (out, out / "supervisor", out / "supervisor" / "v1"):
        init = folder / "__init__.py"
        init.write_text('"""Generated from proto/ by build_proto.py: do not edit."""\n')
        written.append(init)
    return written


if __name__ == "__main__":
    files = generate(HERE / "src" / "supervisor_client" / "_proto")
    print(f"wrote {len(files)} files to src/supervisor_client/_proto")
