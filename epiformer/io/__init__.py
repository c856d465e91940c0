"""Files in and out: safe writing, reading what users bring, the provenance of numbers, and the
precompute manifest."""
