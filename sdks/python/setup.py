"""Generates the gRPC code into the wheel (see build_proto.py) and puts the protos into
the sdist, so a wheel can be built from it anywhere; pyproject.toml has the rest."""

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_proto  # noqa: E402


class BuildWithProto(build_py):
    """build_py that first writes supervisor_client/_proto into the build folder."""

    def run(self) -> None:
        super().run()
        build_proto.generate(Path(self.build_lib) / "supervisor_client" / "_proto")


class SdistWithProto(sdist):
    """sdist that also holds the protos (under proto/, where build_proto.py looks)."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        shutil.copytree(build_proto.proto_dir() / "supervisor", Path(base_dir) / "proto" / "supervisor")


setup(cmdclass={"build_py": BuildWithProto, "sdist": SdistWithProto})
