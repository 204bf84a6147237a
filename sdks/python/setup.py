"""Generates the gRPC code into the wheel (see build_proto.py); pyproject.toml has the rest."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_proto  # noqa: E402


class BuildWithProto(build_py):
    """build_py that first writes supervisor_client/_proto into the build folder."""

    def run(self) -> None:
        super().run()
        build_proto.generate(Path(self.build_lib) / "supervisor_client" / "_proto")


setup(cmdclass={"build_py": BuildWithProto})
