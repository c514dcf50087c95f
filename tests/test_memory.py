"""Memory: the malloc arena cap that keeps a long-running server flat."""

from cats_dogs_other.memory import limit_malloc_arenas


def test_malloc_arenas_can_be_capped() -> None:
    assert limit_malloc_arenas() is True  # glibc accepted the cap
