"""Generate Python stubs for every .proto under cloudless/api/protos into cloudless/api/gen.

grpcio-tools writes absolute imports (``from containerd.types import mount_pb2``); we rewrite
those that point inside the generated tree to ``cloudless.api.gen.…`` so the stubs live inside
our package. ``--check`` regenerates into a temporary folder and fails if the committed stubs
differ (stale stubs are a CI failure).
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "cloudless" / "api" / "protos"
OUT = ROOT / "cloudless" / "api" / "gen"
PKG = "cloudless.api.gen"


def generate(out: Path) -> None:
    protos = sorted(p.relative_to(SRC).as_posix() for p in SRC.rglob("*.proto"))
    if not protos:
        out.mkdir(parents=True, exist_ok=True)
        (out / "__init__.py").write_text('"""Generated protobuf stubs (make proto)."""\n')
        return
    import grpc_tools

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{SRC}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    top_levels = {p.split("/")[0].removesuffix(".proto") for p in protos}
    pattern = re.compile(
        r"^(from|import) (" + "|".join(re.escape(t) for t in sorted(top_levels)) + r")(\.| |$)",
        re.M,
    )
    for path in out.rglob("*.py*"):
        text = path.read_text()
        new = pattern.sub(lambda m: f"{m.group(1)} {PKG}.{m.group(2)}{m.group(3)}", text)
        if new != text:
            path.write_text(new)
    for d in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        init = d / "__init__.py"
        if not init.exists():
            init.write_text("")
    (out / "__init__.py").write_text('"""Generated protobuf stubs (make proto)."""\n')


def same_tree(a: Path, b: Path) -> list[str]:
    diffs: list[str] = []
    files_a = {
        p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    files_b = {
        p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    for rel in sorted(files_a ^ files_b):
        diffs.append(f"only in one tree: {rel}")
    for rel in sorted(files_a & files_b):
        if not filecmp.cmp(a / rel, b / rel, shallow=False):
            diffs.append(f"differs: {rel}")
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="fail if committed stubs are stale")
    ns = ap.parse_args()
    if ns.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / "gen"
            fresh.mkdir()
            generate(fresh)
            diffs = same_tree(fresh, OUT) if OUT.exists() else ["cloudless/api/gen missing"]
            if diffs:
                print("stale protobuf stubs; run `make proto` and commit:", *diffs, sep="\n  ")
                return 1
            print("protobuf stubs up to date")
            return 0
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    generate(OUT)
    print(f"generated stubs in {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
