"""`llmgw serve` settles the heap after startup: the startup objects frozen, the young-GC
threshold from ``[server] gc_threshold``."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from llmgw.commands.serve import tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_freezes_the_startup_heap_and_sets_the_young_threshold() -> None:
    _, older, oldest = gc.get_threshold()
    tune_gc(12_345)
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (12_345, older, oldest)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_zero_keeps_pythons_threshold() -> None:
    before = gc.get_threshold()
    tune_gc(0)
    assert gc.get_threshold() == before
