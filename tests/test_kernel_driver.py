"""The C++ kernel driver (csrc/tests/kernel_driver.cpp), built natively and run: every
kernel of every ISA path this CPU supports against the scalar reference, without
Python in between. The same driver runs on arm64 under QEMU (tools/arm64_check.sh).
Also checks the ISA objects for weak symbols, which the linker could pick for baseline
code and so run AVX instructions on a CPU without AVX (one-definition-rule leak)."""
import os
import shutil
import subprocess

import pytest

import hearthlm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "tools", "build_kernel_driver.sh")
CXX = os.environ.get("CXX", "g++")

pytestmark = pytest.mark.skipif(
    not (os.path.exists(BUILD) and shutil.which(CXX) and shutil.which("bash")),
    reason="needs the source tree's tools/ and a C++ compiler")


@pytest.fixture(scope="module")
def driver():
    out = os.path.join(ROOT, "build", "kernel-driver", "kernel_driver")
    # -O3 as CMakeLists.txt builds the extension, so inlining (and what is left as a
    # weak out-of-line copy) matches the wheel.
    env = {**os.environ, "BASE_FLAGS": "-O3"}
    built = subprocess.run(["bash", BUILD, out, CXX], capture_output=True, text=True, env=env, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    last = built.stdout.strip().splitlines()[-1]
    isa_objects = dict(item.split("=", 1) for item in last.split(":", 1)[1].split())
    return out, isa_objects


def test_every_kernel_matches_scalar(driver):
    exe, _ = driver
    best = hearthlm.cpu_info()["supported_isas"][-1]
    run = subprocess.run([exe, "--expect-isa", best], capture_output=True, text=True, timeout=300)
    summary = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 0 and summary.endswith(" 0 failed"), run.stdout + run.stderr
    assert f"dispatch picks: {best}" in run.stdout


def test_scalar_path_alone(driver):
    exe, _ = driver
    run = subprocess.run([exe, "--isa", "scalar"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_dispatch_refuses_a_table_with_a_null_entry(driver):
    """Dispatch checks every table before use (check_kernel_table): the driver nulls each
    entry of a copy of the scalar table in turn and expects an error naming the ISA and
    that entry; it also fails while an entry has no check_* of its own."""
    exe, _ = driver
    run = subprocess.run([exe, "--isa", "scalar", "-v"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    refused = [line for line in run.stdout.splitlines() if line.startswith("PASS null ")]
    assert "PASS null matmul_q[4] refused" in refused and "PASS null attention[3] refused" in refused
    assert "PASS check_kernel_table(scalar)" in run.stdout


@pytest.mark.skipif(not shutil.which("nm"), reason="needs nm (binutils)")
def test_isa_objects_define_no_weak_symbols(driver):
    """An inline function or template instantiated in an AVX translation unit is a weak
    (COMDAT) symbol; if the baseline code uses the same one, the linker keeps one copy,
    maybe the AVX one, and the scalar path dies with SIGILL on an old CPU. ISA code must
    live in its own namespace with internal linkage (static / anonymous namespace)."""
    _, isa_objects = driver
    leaks = {}
    for isa, obj in isa_objects.items():
        nm = subprocess.run(["nm", "-C", obj], capture_output=True, text=True, check=True)
        weak = [line for line in nm.stdout.splitlines() if line[17:19].strip() in ("W", "V", "u")]
        if weak:
            leaks[f"{isa}: {obj}"] = weak
    assert not leaks, f"weak symbols in ISA objects: {leaks}"


SIMDE = "/usr/include/simde/x86/avx512.h"


@pytest.mark.skipif(not os.path.exists(SIMDE) or os.uname().machine != "x86_64",
                    reason="needs x86-64 and SIMDe (Debian: libsimde-dev) to emulate AVX-512")
def test_avx512_kernels_under_emulation():
    """The AVX-512 kernels cannot run on a CPU without AVX-512, so they are built for AVX2
    with their intrinsics mapped to SIMDe and checked against scalar like any path."""
    if "avx512" in hearthlm.cpu_info()["supported_isas"]:
        pytest.skip("this CPU runs the real AVX-512 path in test_every_kernel_matches_scalar")
    out = os.path.join(ROOT, "build", "kernel-driver-avx512-emulated", "kernel_driver")
    env = {**os.environ, "BASE_FLAGS": "-O2", "EMULATE_AVX512": "1"}
    built = subprocess.run(["bash", BUILD, out, CXX], capture_output=True, text=True, env=env, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    run = subprocess.run([out, "--emulated", "avx512"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "checking avx512 against scalar" in run.stdout, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1].endswith(" 0 failed")
