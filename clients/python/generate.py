"""Generates the Python stubs of Sportello's contract (../../proto) into
src/sportello_client/_gen with grpcio-tools: messages, typing stubs and gRPC stubs. Run it after
installing the dev extras, and again whenever the contract changes."""

import pathlib
import sys

from grpc_tools import protoc
import grpc_tools

HERE = pathlib.Path(__file__).resolve().parent
PROTO = HERE.parent.parent / "proto"
OUT = HERE / "src" / "sportello_client" / "_gen"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.glob("sportello/**/*.proto"))
    files += ["google/rpc/status.proto", "google/rpc/error_details.proto"]
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO}",
            f"-I{well_known}",
            f"--python_out={OUT}",
            f"--pyi_out={OUT}",
            f"--grpc_python_out={OUT}",
            *files,
        ]
    )
    if code == 0:
        print(f"generated {len(files)} files' stubs into {OUT}")
    return code


if __name__ == "__main__":
    sys.exit(main())
