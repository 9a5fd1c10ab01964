"""The serve process's cyclic-GC settings: a gen-1 pass, which walks every open stream's
objects, is rare; start-up objects are frozen out of the collections."""

from __future__ import annotations

import gc

from arbstr.server.runner import GC_THRESHOLDS, tune_gc


def test_tune_gc_sets_rare_young_passes_and_freezes() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] >= 10_000 and GC_THRESHOLDS[1] >= 100
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
