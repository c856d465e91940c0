"""Where a model's windows lie on the genome: the one window rule of every command and the server.

Windows start on the bin grid of the precomputed tracks; a variant's window is centred near it
(shared by the variants of a few neighbouring bins); a region gets one window or abutting tiles.
The coded windows the engine takes are longer by the span of the shifts, so that every shifted
window is a slice of one.
"""
from __future__ import annotations

from typing import Sequence

from epiformer.model.config import ModelConfig


class ModelWindows:
    """The window geometry of a model (``config``) run with ``shifts`` (bp)."""

    def __init__(self, config: ModelConfig, shifts: Sequence[int] = (0,)) -> None:
        self.config = config
        self.shifts = tuple(shifts) or (0,)

    @property
    def output_span(self) -> int:
        """Base pairs covered by one window's output (after cropping)."""
        return self.config.n_output_bins * self.config.bin_size

    @property
    def output_offset(self) -> int:
        """Distance from a window's start to the start of its output."""
        return self.config.crop_size * self.config.bin_size

    @property
    def coded_length(self) -> int:
        """Length of the coded windows the engine takes (:meth:`Engine.predict_coded <epiformer.inference.engine.Engine.predict_coded>`): the model's
        window plus the span of the shifts, so that every shifted window is a slice of it."""
        return self.config.seq_len + max(self.shifts) - min(self.shifts)

    def coded_start(self, start: int) -> int:
        """Where the coded window of the model window at ``start`` (shift 0) begins."""
        return start + min(self.shifts)

    def window_for(self, position: int) -> int:
        """Start of the window for a 0-based position: on the bin grid (a multiple of ``bin_size``),
        the position in the centre bin. Positions in one bin share one window."""
        cfg = self.config
        return (position // cfg.bin_size) * cfg.bin_size - cfg.seq_len // 2

    def default_share_bins(self) -> int:
        """How far (in bins) from its window's centre a variant may be, by default: a 32nd of the
        output (3 bins for the demo's tiny model, 40 = 5,120 bp for the paper's 98,304 bp window)."""
        return self.config.n_output_bins // 16

    def variant_window(self, position: int, share_bins: int) -> int:
        """Start of the window a variant at a 0-based position is scored in. Windows are centred
        on every (2K+1)-th bin of the grid (K = ``share_bins``): the variants of those 2K+1 bins
        share one window, each at most K bins from its centre. K = 0 is :meth:`window_for`."""
        cfg, block = self.config, 2 * share_bins + 1
        centre_bin = (position // cfg.bin_size) // block * block + share_bins
        return centre_bin * cfg.bin_size - cfg.seq_len // 2

    def tile_starts(self, start: int, end: int) -> list[int]:
        """Starts of the windows whose outputs abut and cover [start, end) on the bin grid: the first
        output begins at the bin holding ``start`` (the window itself ``output_offset`` earlier)."""
        if end <= start:
            raise ValueError(f"empty region {start}-{end}")
        first = (start // self.config.bin_size) * self.config.bin_size
        n_windows = -(-(end - first) // self.output_span)
        return [first - self.output_offset + k * self.output_span for k in range(n_windows)]

    def region_windows(self, start: int, end: int) -> list[int]:
        """The one window rule for a region [start, end), for ``predict``, ``/api/predict`` and
        variants alike: every window on the bin grid of the precomputed tracks. A region that one
        window's output can hold gets one window, as near centred on it as the grid allows; a
        longer one is tiled (:meth:`tile_starts`)."""
        bin_size, span = self.config.bin_size, self.output_span
        lowest = -(-(end - span) // bin_size) * bin_size        # the first output start that still reaches end
        highest = (start // bin_size) * bin_size                # the last output start that still holds start
        if lowest <= highest:
            centred = self.window_for((start + end) // 2) + self.output_offset
            return [min(max(centred, lowest), highest) - self.output_offset]
        return self.tile_starts(start, end)
