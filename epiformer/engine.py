"""The inference engine: the one place that turns DNA into predictions.

It owns the device, precision, batching, reverse-complement and shift ensembling, and the
windows that cover a genomic region; callers hand it encoded windows or genome intervals and
get numpy arrays back (float32, (windows, targets, output bins)).
"""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .genome import CodedWindows, Genome, encode_tensor


class DeviceError(UserError, RuntimeError):
    """A device that cannot be used here, naming it."""


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) picks CUDA when available, else CPU; otherwise the named device, checked
    to exist (:class:`DeviceError` otherwise)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"device {device!r} is not one of auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device} requested but CUDA is not available here (torch "
                              f"{torch.__version__}, {'a CPU build' if torch.version.cuda is None else 'no GPU visible'}): "
                              "install a CUDA build of torch, or use --device cpu")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device} requested but only {torch.cuda.device_count()} GPU(s) are visible")
    elif chosen.type != "cpu":
        raise DeviceError(f"device {device!r} is not supported: use auto, cpu, cuda or cuda:N")
    return chosen


@dataclass(frozen=True)
class RegionTracks:
    """Predicted values per target over consecutive bins starting at ``start`` (0-based)."""

    chrom: str
    start: int
    bin_size: int
    values: np.ndarray           # (targets, bins) float32
    target_names: list[str]

    @property
    def end(self) -> int:
        return self.start + self.values.shape[1] * self.bin_size

    def bin_starts(self) -> np.ndarray:
        return self.start + self.bin_size * np.arange(self.values.shape[1])


class Engine:
    """Runs a model (an :class:`~epiformer.model.Epiformer` or a
    :class:`~epiformer.modelset.ModelSet`) in eval mode under ``torch.inference_mode``.

    ``reverse_complement`` averages each window with its reverse complement (the prediction of
    the reverse strand flipped back); ``shifts`` (bp) averages windows moved by a few bases
    (genome intervals only). ``bf16`` runs the model under bfloat16 autocast, on CUDA and on CPU
    alike, so a precision gives the same kind of numbers on every device. ``compile`` compiles
    each model's forward pass with ``torch.compile`` (:meth:`Epiformer.compile_for_inference
    <epiformer.model.Epiformer.compile_for_inference>`): slower to start, faster to run.
    """

    def __init__(self, model: nn.Module, device: str | torch.device | None = "auto",
                 batch_size: int = 4, bf16: bool = False, reverse_complement: bool = True,
                 shifts: Sequence[int] = (0,), compile: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.bf16 = bf16
        self.reverse_complement = reverse_complement
        self.shifts = tuple(shifts) or (0,)
        if compile:
            for member in getattr(self.model, "members", [self.model]):
                member.compile_for_inference()
        self.oom_splits = 0       # batches split after running out of device memory

    @property
    def config(self):
        return self.model.config

    @property
    def target_names(self) -> list[str]:
        return list(self.model.target_names)

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
        """Length of the coded windows the engine takes (:meth:`predict_coded`): the model's
        window plus the span of the shifts, so that every shifted window is a slice of it."""
        return self.config.seq_len + max(self.shifts) - min(self.shifts)

    def coded_start(self, start: int) -> int:
        """Where the coded window of the model window at ``start`` (shift 0) begins."""
        return start + min(self.shifts)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def predict(self, inputs: np.ndarray | torch.Tensor) -> np.ndarray:
        """Predictions for encoded windows (N, 4, seq_len) -> (N, targets, output bins)."""
        batch = torch.as_tensor(inputs, dtype=torch.float32)
        if batch.ndim == 2:
            batch = batch[None]
        seq_len = self.config.seq_len
        if batch.ndim != 3 or batch.shape[1] != 4 or batch.shape[2] != seq_len:
            raise ValueError(f"expected encoded windows of shape (N, 4, {seq_len}), "
                             f"got {tuple(batch.shape)}")
        outputs = list(self._run(batch))
        if not outputs:
            return np.zeros((0, len(self.target_names), self.config.n_output_bins), np.float32)
        return np.concatenate(outputs)

    def _run(self, batch: torch.Tensor) -> Iterator[np.ndarray]:
        with torch.inference_mode(), self._autocast():
            for lo in range(0, batch.shape[0], self.batch_size):
                yield self._forward(batch[lo: lo + self.batch_size])

    def ensembled(self, x: torch.Tensor) -> torch.Tensor:
        """The model set's output for encoded windows on the device (N, 4, seq_len), averaged with
        the reverse complement's when it is on: (N, targets, output bins), float32. Differentiable
        (interpretation takes its gradients); :meth:`predict` runs it without them."""
        if not self.reverse_complement:
            return self.model(x).float()
        both = self.model(torch.cat([x, x.flip(1, 2)])).float()
        return (both[: len(x)] + both[len(x):].flip(2)) / 2

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        """One batch, reverse complement included. Out of device memory, the batch is split in two
        and each half retried (down to one window), so a large batch slows down instead of failing."""
        try:
            return self.ensembled(x.to(self.device, non_blocking=True)).cpu().numpy()
        except torch.OutOfMemoryError:
            if len(x) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(x) // 2
            self.oom_splits += 1
            return np.concatenate([self._forward(x[:half]), self._forward(x[half:])])

    def predict_coded(self, windows: CodedWindows) -> np.ndarray:
        """Predictions for coded windows (:class:`~epiformer.genome.CodedWindows`, each
        :attr:`coded_length` long), averaged over the shifts -> (N, targets, output bins).

        Codes and float16 conservation go to the device one batch at a time (from pinned memory
        on CUDA, the next batch's copy overlapping this batch's work); one-hot encoding, the
        shifts and the reverse complement are made there."""
        if windows.codes.ndim != 2 or windows.codes.shape[1] != self.coded_length:
            raise ValueError(f"expected coded windows of shape (N, {self.coded_length}), got {tuple(windows.codes.shape)}")
        batches = [windows[lo: lo + self.batch_size] for lo in range(0, len(windows), self.batch_size)]
        outputs = []
        with torch.inference_mode(), self._autocast():
            pending = self._to_device(batches[0]) if batches else None
            for k in range(len(batches)):
                on_device = pending
                if k + 1 < len(batches):
                    pending = self._to_device(batches[k + 1])
                total = None
                for shift in range(len(self.shifts)):
                    prediction = self._forward(self._encoded(on_device, shift))
                    total = prediction if total is None else total + prediction
                outputs.append(total / len(self.shifts))
        if not outputs:
            return np.zeros((0, len(self.target_names), self.config.n_output_bins), np.float32)
        return np.concatenate(outputs)

    def encode_coded(self, windows: CodedWindows) -> torch.Tensor:
        """The model inputs of coded windows on the device, once per shift: (shifts, N, 4, seq_len)."""
        on_device = self._to_device(windows)
        return torch.stack([self._encoded(on_device, shift) for shift in range(len(self.shifts))])

    def _to_device(self, windows: CodedWindows) -> CodedWindows:
        def move(array):
            tensor = torch.as_tensor(array)
            if self.device.type != "cuda":
                return tensor
            return (tensor if tensor.is_pinned() else tensor.pin_memory()).to(self.device, non_blocking=True)
        return CodedWindows(move(windows.codes), None if windows.conservation is None else move(windows.conservation))

    def _encoded(self, on_device: CodedWindows, shift: int) -> torch.Tensor:
        """Model inputs (N, 4, seq_len) of the ``shift``-th shift of coded windows on the device."""
        lo = self.shifts[shift] - min(self.shifts)
        codes = on_device.codes[:, lo: lo + self.config.seq_len]
        cons = None if on_device.conservation is None else on_device.conservation[:, lo: lo + self.config.seq_len]
        return encode_tensor(codes, cons)

    def predict_intervals(self, genome: Genome, intervals: Sequence[tuple[str, int]]) -> np.ndarray:
        """Predictions for windows of ``seq_len`` starting at each (chrom, start), averaged over
        ``shifts`` (every shifted window a slice of one coded window read from the genome)."""
        coded = [(chrom, self.coded_start(start)) for chrom, start in intervals]
        return self.predict_coded(genome.coded_windows(coded, self.coded_length))

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

    def predict_region(self, genome: Genome, chrom: str, start: int, end: int) -> RegionTracks:
        """Tracks over a region (0-based, half-open) from :meth:`region_windows`: the whole output
        of its one window, or the tiled windows' outputs trimmed to the bins holding the region."""
        genome.check_interval(chrom, start, end)
        starts = self.region_windows(start, end)
        prediction = self.predict_intervals(genome, [(chrom, s) for s in starts])
        values = np.concatenate(list(prediction), axis=1)
        first = starts[0] + self.output_offset
        if len(starts) > 1:
            n_bins = -(-(end - first) // self.config.bin_size)
            values = values[:, :n_bins]
        return RegionTracks(chrom, first, self.config.bin_size, values, self.target_names)

    def predict_substitutions(self, window: np.ndarray, substitutions: Sequence[tuple[int, np.ndarray]],
                              incremental: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Predictions of one encoded window (4, seq_len) and of it with each substitution applied
        alone ((position, new encoded column (4,))): (targets, output bins), (N, targets, bins).

        ``incremental`` runs the convolutional tower once on the window (see :meth:`_incremental`);
        otherwise the window and every substituted window run whole, batched together.
        """
        window = np.asarray(window, dtype=np.float32)
        if not incremental:
            rows = [None, *substitutions]                # the reference first, then each substitution
            outputs = []
            for lo in range(0, len(rows), self.batch_size):
                batch = np.repeat(window[None], len(rows[lo: lo + self.batch_size]), axis=0)
                for row, substitution in enumerate(rows[lo: lo + self.batch_size]):
                    if substitution is not None:
                        batch[row, :, substitution[0]] = substitution[1]
                outputs.append(self.predict(batch))
            outputs = np.concatenate(outputs)
            return outputs[0], outputs[1:]
        edits = [Edit(0, np.array([pos]), np.asarray(column, np.float32)[:, None]) for pos, column in substitutions]
        with torch.inference_mode():
            x = torch.as_tensor(window[None], device=self.device)
        reference, alternates, _ = self._incremental(x, edits)
        return reference[0], alternates

    def predict_alternates(self, groups: Sequence[AlternateGroup]) -> list[tuple[ReferenceState, np.ndarray]]:
        """Reference and alternate predictions of windows: each group is a coded reference window,
        its coded alternates (:class:`~epiformer.genome.CodedWindows` of 1 and of N windows) and
        the reference's :class:`ReferenceState` when an earlier call made it (then the reference
        does not run again), or None; returns per group (its reference state, alternates (N,
        targets, bins)), averaged over the shifts. An alternate that differs from its reference
        in a few bases (an SNV or MNV) runs incrementally (:meth:`_incremental`: the reference's
        tower, then the tower only near the change); any other (an indel moves the rest of the
        window) runs whole. Out of device memory, the groups (or one group's alternates) are
        split in two and each half retried, as :meth:`_forward` does."""
        try:
            return self._alternates(groups)
        except torch.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.oom_splits += 1
            if len(groups) > 1:
                half = len(groups) // 2
                return self.predict_alternates(groups[:half]) + self.predict_alternates(groups[half:])
            (reference, alternates, state), = groups
            if len(alternates) < 2:
                raise
            half = len(alternates) // 2
            (state, first), = self.predict_alternates([(reference, alternates[:half], state)])
            (_, second), = self.predict_alternates([(reference, alternates[half:], state)])
            return [(state, np.concatenate([first, second]))]

    def _alternates(self, groups: Sequence[AlternateGroup]) -> list[tuple[ReferenceState, np.ndarray]]:
        n_targets, n_bins = len(self.target_names), self.config.n_output_bins
        alternates_out = [np.zeros((len(alts), n_targets, n_bins), np.float32) for _, alts, _ in groups]
        if not groups:
            return []
        edits, whole = [], []
        for g, (reference, alternates, _) in enumerate(groups):
            for k in range(len(alternates)):
                edit = self._edit(g, reference, alternates[k: k + 1])
                (edits if edit is not None else whole).append((g, k, edit if edit is not None else alternates[k: k + 1]))
        references = self._to_device(CodedWindows.concatenate([reference for reference, _, _ in groups]))
        predictions = [np.zeros((n_targets, n_bins), np.float32) if state is None else state.prediction
                       for _, _, state in groups]
        towers: list[list] = [[] if state is None else state.towers for _, _, state in groups]
        with torch.inference_mode():
            for shift in range(len(self.shifts)):
                offset = self.shifts[shift] - min(self.shifts)
                shifted = [Edit(e.group, e.positions - offset, e.columns) for _, _, e in edits]
                given = [state.towers[shift] if state is not None else None for _, _, state in groups]
                ref_predictions, edit_predictions, made = self._incremental(self._encoded(references, shift), shifted, given)
                for g, (_, _, state) in enumerate(groups):
                    if state is None:
                        predictions[g] += ref_predictions[g] / len(self.shifts)
                        towers[g].append(made[g])
                for (g, k, _), prediction in zip(edits, edit_predictions):
                    alternates_out[g][k] += prediction / len(self.shifts)
        if whole:
            for (g, k, _), prediction in zip(whole, self.predict_coded(CodedWindows.concatenate([w for _, _, w in whole]))):
                alternates_out[g][k] = prediction
        states = [state if state is not None else ReferenceState(predictions[g], towers[g])
                  for g, (_, _, state) in enumerate(groups)]
        return list(zip(states, alternates_out))

    def _edit(self, group: int, reference: CodedWindows, alternate: CodedWindows) -> Edit | None:
        """The columns (in coded-window coordinates) where ``alternate`` differs from
        ``reference``, encoded, when the incremental tower slice they need is under half the
        window; else None (run it whole)."""
        ref_codes, alt_codes = np.asarray(reference.codes[0]), np.asarray(alternate.codes[0])
        differs = ref_codes != alt_codes
        if reference.conservation is not None:
            differs |= np.asarray(reference.conservation[0]) != np.asarray(alternate.conservation[0])
        changed = np.flatnonzero(differs)
        cfg = self.config
        if len(changed) and (changed[-1] - changed[0]) // cfg.bin_size + 4 * self._tower_reach() + 1 > cfg.n_bins // 2:
            return None
        cons = None if alternate.conservation is None else torch.as_tensor(np.asarray(alternate.conservation[0])[changed])
        columns = encode_tensor(torch.as_tensor(alt_codes[changed])[None], None if cons is None else cons[None])[0]
        return Edit(group, changed, columns.numpy())

    def _incremental(self, windows: torch.Tensor, edits: Sequence[Edit],
                     given: Sequence[list | None] | None = None) -> tuple[np.ndarray, np.ndarray, list]:
        """Predictions of encoded windows on the device (G, 4, seq_len), and of each edit (columns
        replaced in one of them): (G, targets, bins), (E, targets, bins), reverse complement
        included; and each window's tower outputs ([strand][member] (E, bins) tensors).

        The convolutional tower runs once on each window (per strand) unless ``given`` holds its
        outputs from an earlier call (then its prediction is not made again: zeros in its row);
        for each edit the tower runs only on a slice around the changed columns, replacing the
        tower outputs they can reach (``config.tower_radius``); the transformer and head run on
        whole windows. The slice reaches twice as far as the replaced bins, so zero padding at
        its edges never touches them: the result equals full recomputation up to float rounding.
        """
        members = list(getattr(self.model, "members", [self.model]))
        strands = [False, True] if self.reverse_complement else [False]
        given = list(given) if given is not None else [None] * len(windows)
        missing = [g for g, towers in enumerate(given) if towers is None]
        seq_len = self.config.seq_len
        ref_total, edit_total = None, None
        made: list[list] = [[] for _ in given]
        with torch.inference_mode(), self._autocast():
            for strand, reverse in enumerate(strands):
                x = windows.flip(1, 2) if reverse else windows
                strand_edits = [Edit(e.group, seq_len - 1 - e.positions, e.columns[::-1].copy()) if reverse else e
                                for e in edits]
                new = x[missing]
                towers = []
                for i, member in enumerate(members):
                    computed = torch.cat([member.conv(new[lo: lo + self.batch_size])
                                          for lo in range(0, len(new), self.batch_size)]) if missing else None
                    if len(missing) == len(given):          # no given towers: the computed ones, uncopied
                        towers.append(computed)
                        continue
                    rows = iter(computed if computed is not None else [])
                    towers.append(torch.stack([next(rows) if towers_g is None else towers_g[strand][i]
                                               for towers_g in given]))
                refs = np.zeros((len(given), len(self.target_names), self.config.n_output_bins), np.float32)
                for lo in range(0, len(missing), self.batch_size):
                    rows = missing[lo: lo + self.batch_size]
                    refs[rows] = self._combined([member.from_tower(tower[rows]) for member, tower in zip(members, towers)])
                for g in missing:
                    made[g].append([tower[g].clone() for tower in towers])
                outs = [self._substituted(members, towers, x, strand_edits[lo: lo + self.batch_size])
                        for lo in range(0, len(edits), self.batch_size)]
                outs = np.concatenate(outs) if outs else np.zeros((0, *refs.shape[1:]), np.float32)
                if reverse:
                    refs, outs = refs[:, :, ::-1], outs[:, :, ::-1]
                ref_total = refs if ref_total is None else ref_total + refs
                edit_total = outs if edit_total is None else edit_total + outs
        return ref_total / len(strands), edit_total / len(strands), made

    def _tower_reach(self) -> int:
        """Tower output bins a changed base can reach, each side of its own bin."""
        return -(-self.config.tower_radius // self.config.bin_size) + 1

    def _combined(self, member_outputs: list[torch.Tensor]) -> np.ndarray:
        combine = getattr(self.model, "combine", None)
        combined = combine(member_outputs) if combine is not None else member_outputs[0]
        return combined.float().cpu().numpy()

    def _substituted(self, members: list[nn.Module], towers: list[torch.Tensor], x: torch.Tensor,
                     batch: Sequence[Edit]) -> np.ndarray:
        cfg = self.config
        bin_size, n_bins = cfg.bin_size, cfg.n_bins
        reach = self._tower_reach()
        spans = []
        for edit in batch:
            if not len(edit.positions):
                spans.append((edit, 0, 0, 0, 0))
                continue
            lo, hi = int(edit.positions.min()) // bin_size, int(edit.positions.max()) // bin_size
            spans.append((edit, lo, hi, max(0, lo - 2 * reach), min(n_bins, hi + 2 * reach + 1)))
        groups = torch.as_tensor([edit.group for edit in batch], device=x.device)
        member_outputs = []
        for member, tower in zip(members, towers):
            features = tower.index_select(0, groups)
            for (start, stop), rows in _group_by_span(spans).items():
                if start == stop:
                    continue                    # no change: the reference's own tower
                piece = torch.stack([x[spans[row][0].group, :, start * bin_size: stop * bin_size] for row in rows]).clone()
                for k, row in enumerate(rows):
                    edit = spans[row][0]
                    columns = torch.as_tensor(edit.columns, device=x.device, dtype=piece.dtype)
                    piece[k, :, torch.as_tensor(edit.positions - start * bin_size, device=x.device)] = columns
                computed = member.conv(piece)
                for k, row in enumerate(rows):
                    lo, hi = spans[row][1], spans[row][2]
                    a, b = max(start, lo - reach), min(stop, hi + reach + 1)
                    features[row, :, a:b] = computed[k, :, a - start: b - start]
            member_outputs.append(member.from_tower(features))
        return self._combined(member_outputs)


@dataclass
class ReferenceState:
    """A reference window's prediction (targets, bins), averaged over shifts and strands, and
    what its alternates reuse: the convolutional tower's outputs, on the engine's device, per
    shift, strand and model of the set ([shift][strand][member] (E, bins) tensors)."""

    prediction: np.ndarray
    towers: list


AlternateGroup = tuple[CodedWindows, CodedWindows, "ReferenceState | None"]


@dataclass
class Edit:
    """Columns of an encoded window replaced: which window, where (positions), and by what (4, k)."""

    group: int
    positions: np.ndarray
    columns: np.ndarray


def _group_by_span(spans: list[tuple]) -> dict[tuple[int, int], list[int]]:
    """Rows of a batch grouped by their tower slice (slices near the window ends are shorter)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for row, span in enumerate(spans):
        groups.setdefault((span[3], span[4]), []).append(row)
    return groups


class PredictionCache:
    """A thread-safe least-recently-used cache of predictions (of reference windows, say) that also
    shares work in flight: a key asked for while another caller computes it waits for that result
    instead of computing it again (with a capacity of 0 too, which keeps nothing afterwards)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._pending: dict[Hashable, Future] = {}
        self._lock = threading.Lock()

    def _get(self, key: Hashable) -> np.ndarray | None:
        """The cached value (counted as a hit or a miss); the caller holds the lock."""
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return value

    def peek(self, keys: Sequence[Hashable]) -> dict[Hashable, object]:
        """The cached values of those ``keys`` that are cached (counted as hits and misses),
        without waiting for any being computed."""
        with self._lock:
            found = {key: self._get(key) for key in dict.fromkeys(keys)}
        return {key: value for key, value in found.items() if value is not None}

    def put(self, key: Hashable, value: object) -> None:
        """Keep ``value`` (the least recently used goes beyond the capacity)."""
        self._put(key, value)

    def _put(self, key: Hashable, value: np.ndarray) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def fetch(self, keys: Sequence[Hashable], compute: Callable[[list], Sequence[np.ndarray]],
              timeout: float | None = None) -> dict[Hashable, np.ndarray]:
        """The value of every key: cached, being computed by another caller (waited for, at most
        ``timeout`` s: :class:`concurrent.futures.TimeoutError`), or computed here in one
        ``compute(missing keys)`` call."""
        found: dict[Hashable, np.ndarray | Future] = {}
        mine: list[Hashable] = []
        with self._lock:
            for key in dict.fromkeys(keys):
                value = self._get(key)
                if value is None:
                    value = self._pending.get(key)
                if value is None:
                    value = self._pending[key] = Future()
                    mine.append(key)
                found[key] = value
        if mine:
            try:
                for key, value in zip(mine, compute(mine)):
                    self._put(key, value)
                    found[key].set_result(value)
            except BaseException as err:
                for key in mine:
                    if not found[key].done():
                        found[key].set_exception(err)
                raise
            finally:
                with self._lock:
                    for key in mine:
                        self._pending.pop(key, None)
        return {key: value.result(timeout) if isinstance(value, Future) else value for key, value in found.items()}
