import pytest

from slimbert.hw import detect_isa, int8_formats

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
HASWELL = "flags\t\t: fpu sse2 avx avx2 fma\n"
GRAVITON = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp\n"


@pytest.mark.parametrize(("machine", "cpuinfo", "isa"), [
    ("x86_64", ZEN4, "x86-vnni"),
    ("x86_64", "flags : avx2 avx512f avx512bw\n", "x86-avx512"),
    ("x86_64", HASWELL, "x86-avx2"),
    ("aarch64", GRAVITON, "arm64-dotprod"),
    ("aarch64", "Features : fp asimd\n", "arm64"),
    ("riscv64", "", "generic"),
])
def test_detects_the_instruction_set(machine, cpuinfo, isa):
    assert detect_isa(machine, cpuinfo) == isa


def test_formats_follow_the_instruction_set():
    vnni, avx2, arm = int8_formats("x86-vnni"), int8_formats("x86-avx2"), int8_formats("arm64-dotprod")
    assert (vnni.activation_type, vnni.weight_type, vnni.reduce_range) == ("uint8", "int8", False)
    assert avx2.reduce_range and "saturat" in avx2.why  # 7-bit weights without VNNI
    assert arm.activation_type == "int8"
    with pytest.raises(ValueError, match="unknown instruction set"):
        int8_formats("mips")
