from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pgops.repository.s3 import MAX_PART, MAX_PARTS, MIN_PART, max_stream_size, part_size_for

MIB = 1024 * 1024
TB = 10**12


def test_default_part_size_carries_more_than_a_terabyte():
    assert max_stream_size(32 * MIB) > 10 * TB
    assert max_stream_size(5 * MIB) > TB  # even the smallest allowed part size


@given(base=st.integers(MIN_PART, MAX_PART), n=st.integers(1, MAX_PARTS - 1))
def test_part_sizes_are_legal_and_never_shrink(base, n):
    assert MIN_PART <= part_size_for(n, base) <= MAX_PART
    assert part_size_for(n + 1, base) >= part_size_for(n, base)
