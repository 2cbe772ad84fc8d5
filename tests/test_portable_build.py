"""The installed llama.cpp is a portable build: no AMX or AVX-512 code, checked by disassembly."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[1] / ".ci" / "check-portable-llama"

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 instruction sets"
)


def test_the_installed_llama_cpp_has_no_amx_or_avx512_code() -> None:
    pytest.importorskip("llama_cpp")
    done = subprocess.run(["bash", str(CHECK)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "AMX instructions 0, AVX-512 instructions 0" in done.stdout


def test_the_check_finds_amx_and_avx512_when_they_are_there(tmp_path: Path) -> None:
    """The detector itself: a library with one AMX and one AVX-512 instruction fails it."""
    if shutil.which("gcc") is None or shutil.which("objdump") is None:
        pytest.fail("gcc and objdump are needed (build-essential)")
    src = tmp_path / "native.s"
    src.write_text(
        ".text\n.globl f\nf:\n tilezero %tmm4\n vaddps %zmm1, %zmm2, %zmm3\n ret\n"
        '.section .note.GNU-stack,"",@progbits\n'
    )
    lib = tmp_path / "libggml-cpu.so"
    subprocess.run(["gcc", "-shared", "-o", str(lib), str(src)], check=True)
    done = subprocess.run(
        ["bash", str(CHECK), str(lib)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "AMX instructions 1, AVX-512 instructions 1" in done.stdout
