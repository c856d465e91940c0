"""Variant windows run incrementally: the convolutional tower runs once on a reference window, and
an alternate that differs from it in a few bases (an SNV or MNV) reruns the tower only near them.

The result equals running every alternate whole, up to float rounding; an alternate that moves
the rest of the window (an indel) runs whole. The references' states (their predictions and
tower outputs) are kept by the caller, so that a window met again runs only its new alternates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from epiformer.genome.encoding import CodedWindows, encode_tensor
from epiformer.inference.engine import Engine


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


def predict_substitutions(engine: Engine, window: np.ndarray, substitutions: Sequence[tuple[int, np.ndarray]],
                          incremental: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Predictions of one encoded window (4, seq_len) and of it with each substitution applied
    alone ((position, new encoded column (4,))): (targets, output bins), (N, targets, bins).

    ``incremental`` runs the convolutional tower once on the window (see :func:`_incremental`);
    otherwise the window and every substituted window run whole, batched together.
    """
    window = np.asarray(window, dtype=np.float32)
    if not incremental:
        rows = [None, *substitutions]                # the reference first, then each substitution
        outputs = []
        for lo in range(0, len(rows), engine.batch_size):
            batch = np.repeat(window[None], len(rows[lo: lo + engine.batch_size]), axis=0)
            for row, substitution in enumerate(rows[lo: lo + engine.batch_size]):
                if substitution is not None:
                    batch[row, :, substitution[0]] = substitution[1]
            outputs.append(engine.predict(batch))
        outputs = np.concatenate(outputs)
        return outputs[0], outputs[1:]
    edits = [Edit(0, np.array([pos]), np.asarray(column, np.float32)[:, None]) for pos, column in substitutions]
    with torch.inference_mode():
        x = torch.as_tensor(window[None], device=engine.device)
    reference, alternates, _ = _incremental(engine, x, edits)
    return reference[0], alternates


def predict_alternates(engine: Engine, groups: Sequence[AlternateGroup]) -> list[tuple[ReferenceState, np.ndarray]]:
    """Reference and alternate predictions of windows: each group is a coded reference window,
    its coded alternates (:class:`~epiformer.genome.encoding.CodedWindows` of 1 and of N windows) and
    the reference's :class:`ReferenceState` when an earlier call made it (then the reference
    does not run again), or None; returns per group (its reference state, alternates (N,
    targets, bins)), averaged over the shifts. An alternate that differs from its reference
    in a few bases (an SNV or MNV) runs incrementally (:func:`_incremental`: the reference's
    tower, then the tower only near the change); any other (an indel moves the rest of the
    window) runs whole. Out of device memory, the groups (or one group's alternates) are
    split in two and each half retried, as :meth:`Engine.run_batch <epiformer.inference.engine.Engine.run_batch>` does."""
    try:
        return _alternates(engine, groups)
    except torch.OutOfMemoryError:
        if engine.device.type == "cuda":
            torch.cuda.empty_cache()
        engine.oom_splits += 1
        if len(groups) > 1:
            half = len(groups) // 2
            return predict_alternates(engine, groups[:half]) + predict_alternates(engine, groups[half:])
        (reference, alternates, state), = groups
        if len(alternates) < 2:
            raise
        half = len(alternates) // 2
        (state, first), = predict_alternates(engine, [(reference, alternates[:half], state)])
        (_, second), = predict_alternates(engine, [(reference, alternates[half:], state)])
        return [(state, np.concatenate([first, second]))]


def _alternates(engine: Engine, groups: Sequence[AlternateGroup]) -> list[tuple[ReferenceState, np.ndarray]]:
    n_targets, n_bins = len(engine.target_names), engine.config.n_output_bins
    alternates_out = [np.zeros((len(alts), n_targets, n_bins), np.float32) for _, alts, _ in groups]
    if not groups:
        return []
    edits, whole = [], []
    for g, (reference, alternates, _) in enumerate(groups):
        for k in range(len(alternates)):
            edit = _edit(engine, g, reference, alternates[k: k + 1])
            (edits if edit is not None else whole).append((g, k, edit if edit is not None else alternates[k: k + 1]))
    references = engine.to_device(CodedWindows.concatenate([reference for reference, _, _ in groups]))
    predictions = [np.zeros((n_targets, n_bins), np.float32) if state is None else state.prediction
                   for _, _, state in groups]
    towers: list[list] = [[] if state is None else state.towers for _, _, state in groups]
    with torch.inference_mode():
        for shift in range(len(engine.shifts)):
            offset = engine.shifts[shift] - min(engine.shifts)
            shifted = [Edit(e.group, e.positions - offset, e.columns) for _, _, e in edits]
            given = [state.towers[shift] if state is not None else None for _, _, state in groups]
            ref_predictions, edit_predictions, made = _incremental(engine, engine.encoded(references, shift), shifted, given)
            for g, (_, _, state) in enumerate(groups):
                if state is None:
                    predictions[g] += ref_predictions[g] / len(engine.shifts)
                    towers[g].append(made[g])
            for (g, k, _), prediction in zip(edits, edit_predictions):
                alternates_out[g][k] += prediction / len(engine.shifts)
    if whole:
        for (g, k, _), prediction in zip(whole, engine.predict_coded(CodedWindows.concatenate([w for _, _, w in whole]))):
            alternates_out[g][k] = prediction
    states = [state if state is not None else ReferenceState(predictions[g], towers[g])
              for g, (_, _, state) in enumerate(groups)]
    return list(zip(states, alternates_out))


def _edit(engine: Engine, group: int, reference: CodedWindows, alternate: CodedWindows) -> Edit | None:
    """The columns (in coded-window coordinates) where ``alternate`` differs from
    ``reference``, encoded, when the incremental tower slice they need is under half the
    window; else None (run it whole)."""
    ref_codes, alt_codes = np.asarray(reference.codes[0]), np.asarray(alternate.codes[0])
    differs = ref_codes != alt_codes
    if reference.conservation is not None:
        differs |= np.asarray(reference.conservation[0]) != np.asarray(alternate.conservation[0])
    changed = np.flatnonzero(differs)
    cfg = engine.config
    if len(changed) and (changed[-1] - changed[0]) // cfg.bin_size + 4 * _tower_reach(engine, ) + 1 > cfg.n_bins // 2:
        return None
    cons = None if alternate.conservation is None else torch.as_tensor(np.asarray(alternate.conservation[0])[changed])
    columns = encode_tensor(torch.as_tensor(alt_codes[changed])[None], None if cons is None else cons[None])[0]
    return Edit(group, changed, columns.numpy())


def _incremental(engine: Engine, windows: torch.Tensor, edits: Sequence[Edit],
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
    members = list(getattr(engine.model, "members", [engine.model]))
    strands = [False, True] if engine.reverse_complement else [False]
    given = list(given) if given is not None else [None] * len(windows)
    missing = [g for g, towers in enumerate(given) if towers is None]
    seq_len = engine.config.seq_len
    ref_total, edit_total = None, None
    made: list[list] = [[] for _ in given]
    with torch.inference_mode(), engine.autocast():
        for strand, reverse in enumerate(strands):
            x = windows.flip(1, 2) if reverse else windows
            strand_edits = [Edit(e.group, seq_len - 1 - e.positions, e.columns[::-1].copy()) if reverse else e
                            for e in edits]
            new = x[missing]
            towers = []
            for i, member in enumerate(members):
                computed = torch.cat([member.conv(new[lo: lo + engine.batch_size])
                                      for lo in range(0, len(new), engine.batch_size)]) if missing else None
                if len(missing) == len(given):          # no given towers: the computed ones, uncopied
                    towers.append(computed)
                    continue
                rows = iter(computed if computed is not None else [])
                towers.append(torch.stack([next(rows) if towers_g is None else towers_g[strand][i]
                                           for towers_g in given]))
            refs = np.zeros((len(given), len(engine.target_names), engine.config.n_output_bins), np.float32)
            for lo in range(0, len(missing), engine.batch_size):
                rows = missing[lo: lo + engine.batch_size]
                refs[rows] = _combined(engine, [member.from_tower(tower[rows]) for member, tower in zip(members, towers)])
            for g in missing:
                made[g].append([tower[g].clone() for tower in towers])
            outs = [_substituted(engine, members, towers, x, strand_edits[lo: lo + engine.batch_size])
                    for lo in range(0, len(edits), engine.batch_size)]
            outs = np.concatenate(outs) if outs else np.zeros((0, *refs.shape[1:]), np.float32)
            if reverse:
                refs, outs = refs[:, :, ::-1], outs[:, :, ::-1]
            ref_total = refs if ref_total is None else ref_total + refs
            edit_total = outs if edit_total is None else edit_total + outs
    return ref_total / len(strands), edit_total / len(strands), made


def _tower_reach(engine: Engine) -> int:
    """Tower output bins a changed base can reach, each side of its own bin."""
    return -(-engine.config.tower_radius // engine.config.bin_size) + 1


def _combined(engine: Engine, member_outputs: list[torch.Tensor]) -> np.ndarray:
    combine = getattr(engine.model, "combine", None)
    combined = combine(member_outputs) if combine is not None else member_outputs[0]
    return combined.float().cpu().numpy()


def _substituted(engine: Engine, members: list[nn.Module], towers: list[torch.Tensor], x: torch.Tensor,
                 batch: Sequence[Edit]) -> np.ndarray:
    cfg = engine.config
    bin_size, n_bins = cfg.bin_size, cfg.n_bins
    reach = _tower_reach(engine, )
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
    return _combined(engine, member_outputs)
