"""Memory that the process frees goes back to the OS (glibc): RSS must not creep over a long run."""
import platform

import pytest

from pipeline.models import trim_heap_now_and_then

on_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.skipif(not on_glibc, reason="malloc_trim is glibc's")
def test_free_holes_in_the_heap_go_back_to_the_os_at_most_once_a_minute():
    trim_heap_now_and_then(every_seconds=0)
    blocks = [bytearray(2000) for _ in range(100_000)]  # 200 MB from malloc's heap (above pymalloc's 512 bytes)
    kept = blocks[::16]  # long-lived objects between the freed ones, as rows and texts sit between activations
    del blocks
    before = resident_bytes()
    assert trim_heap_now_and_then(every_seconds=0)
    released = before - resident_bytes()
    assert released > 100e6, f"only {released / 1e6:.0f} MB went back"
    assert not trim_heap_now_and_then(every_seconds=3600)  # the next batch does not trim again
    assert len(kept) == 6250
