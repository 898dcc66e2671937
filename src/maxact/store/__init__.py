"""The on-disk atlas: a directory of .npy arrays (one row per unit, memory-mappable) plus JSON.

See docs/STORE.md for the layout. ``store.reader`` needs numpy only (no torch)."""
