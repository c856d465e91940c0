"""``epiformer score-variants``: a VCF or TSV of variants -> effect scores per target.

The input is read in chunks of consecutive records; each finished chunk is written at once to
``OUTPREFIX.parts/part-NNNNNN.npz`` (under a temporary name, then renamed), so memory stays
bounded and a stopped run resumes with the first unfinished chunk. When every chunk is done, the
parts are joined, one part at a time, into ``OUTPREFIX.tsv``, ``OUTPREFIX.h5``, the input VCF
annotated with INFO fields (``OUTPREFIX.vcf``) and ``OUTPREFIX.skipped.tsv``. Each output carries
the settings record of its scores (TSV ``#`` lines, HDF5 attribute ``settings``, VCF header).

Scores come from :class:`epiformer.variants.scorer.VariantScorer`, as the server's /api/variants: variants
in the same 128 bp bin share one window and one reference prediction (kept in its cache across
chunks, which a position-sorted file makes effective).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from epiformer.genome.chrom_names import ChromNames
from epiformer.inference.settings import InferenceSettings, ModelSetOptions, ScoringSettings
from epiformer.io.reading import sha256_file
from epiformer.io.writing import atomic_path, settings_lines, tsv_field
from epiformer.parallel.sharded_jobs import JobShard, PartsFolder, job_shard
from epiformer.variants.alleles import VariantError, on_genome_names, resolve_mismatch
from epiformer.variants.calibration import CALIBRATED, find_calibration
from epiformer.variants.effects import SCORE_FIELDS, SIGNED
from epiformer.variants.scorer import VariantScorer
from epiformer.variants.vcf import Skipped, VariantRecord, VcfError, read_variants


@dataclass
class ScoreOptions:
    """How to save: chunking, progress (how variants are read and scored is the scorer's
    :class:`~epiformer.inference.settings.ScoringSettings`)."""

    chunk: int = 512                # input records per part file
    progress: bool = True
    log: Callable[[str], None] = field(default=print, repr=False)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def score_chunk(scorer: VariantScorer, entries: list[VariantRecord | Skipped]) -> dict[str, np.ndarray]:
    """Scores of one chunk's variants (one forward pass per new reference window and per allele),
    each on the genome's name for its chromosome (:func:`~epiformer.variants.alleles.on_genome_names`) and
    resolved by the scorer's mismatch rule; ``unknown_chroms`` holds the input's chromosome of each
    variant skipped for a chromosome the genome lacks."""
    rows, skipped = [], []
    names = ChromNames(scorer.genome.chrom_sizes, "the variant file", scorer.genome.fasta_path.name)
    for entry in entries:
        if isinstance(entry, Skipped):
            skipped.append(entry)
            continue
        try:
            variant = on_genome_names(entry.variant, names)
            with scorer.genome_lock:
                variant, flag = resolve_mismatch(scorer.genome, variant, scorer.scoring.on_mismatch)
        except VariantError as err:
            skipped.append(Skipped(entry.line, str(entry.variant), str(err)))
            continue
        rows.append((entry, variant, flag))
    scored = scorer.score([v for _, v, _ in rows])
    n_targets = len(scorer.engine.target_names)
    scores = np.stack([s.scores for s in scored]) if scored else np.zeros((0, n_targets, len(SCORE_FIELDS)), np.float32)
    calibrated = bool(scored) and scored[0].percentiles is not None
    return {
        "line": np.array([e.line for e, *_ in rows], np.int64), "id": np.array([e.id for e, *_ in rows], str),
        "chrom": np.array([v.chrom for _, v, _ in rows], str), "pos": np.array([v.pos for _, v, _ in rows], np.int64),
        "ref": np.array([v.ref for _, v, _ in rows], str), "alt": np.array([v.alt for _, v, _ in rows], str),
        "flag": np.array([f for *_, f in rows], str), "scores": scores.astype(np.float32),
        "input_alt": np.array([e.variant.alt for e, *_ in rows], str),
        "percentiles": np.stack([s.percentiles for s in scored]) if calibrated else
        np.zeros((len(rows), n_targets, 0), np.float32),
        "signed_quantiles": np.stack([s.signed_quantiles for s in scored]) if calibrated else
        np.zeros((len(rows), n_targets, 0), np.float32),
        "skipped_line": np.array([s.line for s in skipped], np.int64),
        "skipped_text": np.array([s.text for s in skipped], str),
        "skipped_reason": np.array([s.reason for s in skipped], str),
        "unknown_chroms": np.array(list(names.skipped.elements()), str),
    }


def score_variant_file(scorer: VariantScorer, path: str | os.PathLike, outprefix: str | os.PathLike,
                       options: ScoreOptions | None = None, restart: bool = False,
                       shard: tuple[int, int] = (0, 1), launched: bool = False) -> dict:
    """Score every variant of ``path`` and write OUTPREFIX.{tsv,h5,skipped.tsv} (and .vcf for a
    VCF input). Percentiles are written beside the scores when the scorer's calibration was made
    with the same settings; otherwise the log says why not. Parts of another run (other input,
    models, settings or options) are an error, or discarded with ``restart``.

    ``shard`` (i, N) scores chunks i, i + N, ...; the outputs are written once every part exists
    (by whichever shard finishes last, or by rank 0 when ``launched`` by torchrun)."""
    options = options or ScoreOptions()
    path, outprefix = Path(path), Path(outprefix)
    if not path.is_file():
        raise VcfError(f"variant file {path}: no such file")
    missing_reason = scorer.percentiles_missing()
    if missing_reason:
        options.log(f"note: no percentiles: {missing_reason}")
    settings = scorer.record()
    fingerprint = {"input": [path.name, sha256_file(path)],
                   "settings": {k: v for k, v in settings.items() if k not in ("device", "threads", "code_version")},
                   "genome": [scorer.genome.fasta_path.name, sorted(scorer.genome.chrom_sizes.items())],
                   "options": {"on_mismatch": scorer.scoring.on_mismatch, "max_indel": scorer.scoring.max_indel,
                               "chunk": options.chunk},
                   "calibration": scorer.calibration.settings if missing_reason is None else None}
    parts = PartsFolder(Path(f"{outprefix}.parts"), fingerprint, JobShard(*shard, launched=launched), VcfError,
                        "scoring run (other input, models, settings, options or calibration): pass --restart to "
                        "discard it, or choose another -o")
    parts.claim(restart)
    counts = {"scored": 0, "skipped": 0, "resumed_parts": 0, "chroms_not_in_genome": Counter()}
    total_parts = 0
    bar = tqdm(desc="score-variants", unit="var", disable=not options.progress, dynamic_ncols=True)
    for k, entries in enumerate(_chunks(read_variants(path, scorer.scoring.max_indel), options.chunk)):
        total_parts = k + 1
        if not parts.shard.owns(k):
            continue
        if parts.done(k):
            counts["resumed_parts"] += 1
        else:
            parts.write(k, score_chunk(scorer, entries))
        bar.update(len(entries))
    bar.close()
    unwritten = parts.finish(total_parts, options.log, "outputs")
    if unwritten is not None:
        return {**counts, **unwritten}
    record = {**settings, "percentiles": "given" if missing_reason is None else f"not given: {missing_reason}"}
    written = write_outputs(parts, total_parts, outprefix, path, scorer.engine.target_names, counts,
                            calibrated=missing_reason is None, settings=record)
    unknown = ChromNames(scorer.genome.chrom_sizes, f"variant file {path}", scorer.genome.fasta_path.name)
    unknown.skipped.update(counts["chroms_not_in_genome"])
    if unknown.skipped:
        options.log(unknown.summary("variants"))
    return {**counts, "files": written}


def score_variants(models: ModelSetOptions, fasta: str | os.PathLike, settings: InferenceSettings,
                   path: str | os.PathLike, outprefix: str | os.PathLike, options: ScoreOptions | None = None,
                   scoring: ScoringSettings = ScoringSettings(), restart: bool = False,
                   shard: tuple[int, int] | None = None) -> dict:
    """The score-variants job: the model set opened with ``settings`` (under torchrun each rank a
    shard on its own GPU), its calibration, and :func:`score_variant_file` with ``scoring``."""
    job = job_shard(shard, settings.device)
    with job.open_predictor(models, fasta, settings) as predictor:
        scorer = VariantScorer(predictor, scoring, calibration=find_calibration(predictor.models.sources))
        return score_variant_file(scorer, path, outprefix, options, restart=restart, shard=(job.index, job.count),
                                  launched=job.launched)


def write_outputs(parts: PartsFolder, total: int, outprefix: Path, source: Path, targets: list[str], counts: dict,
                  calibrated: bool, settings: dict) -> list[Path]:
    """Join the parts into the TSV, HDF5, skipped list and annotated VCF, one part at a time, each
    with the ``settings`` record. Swapped variants are written as scored (REF and ALT traded, flag
    ``swapped``); the annotated VCF gives their scores in the input's orientation."""
    import h5py

    tsv, h5, skipped = Path(f"{outprefix}.tsv"), Path(f"{outprefix}.h5"), Path(f"{outprefix}.skipped.tsv")
    pct_fields, signed_fields = (CALIBRATED, SIGNED) if calibrated else ((), ())
    columns = [f"{t}.{f}" for t in targets for f in SCORE_FIELDS] + [f"{t}.{f}_pct" for t in targets for f in pct_fields] \
        + [f"{t}.{f}_signed_q" for t in targets for f in signed_fields]
    with atomic_path(tsv) as tmp_tsv, atomic_path(h5) as tmp_h5, atomic_path(skipped) as tmp_skipped, \
            open(tmp_tsv, "w") as out, open(tmp_skipped, "w") as out_skipped, h5py.File(tmp_h5, "w") as store:
        out.write(settings_lines(settings))
        out.write("\t".join(["id", "chrom", "pos", "ref", "alt", "flag", *columns]) + "\n")
        out_skipped.write(settings_lines(settings))
        out_skipped.write("line\tvariant\treason\n")
        text = h5py.string_dtype()
        sets = {name: store.create_dataset(f"variants/{name}", (0,), maxshape=(None,), chunks=True,
                                           dtype="i8" if name in ("pos", "line") else text)
                for name in ("id", "chrom", "pos", "ref", "alt", "flag", "line")}
        score_sets = {f: store.create_dataset(f"scores/{f}", (0, len(targets)), maxshape=(None, len(targets)),
                                              dtype="f4", chunks=True) for f in SCORE_FIELDS}
        pct_sets = {f: store.create_dataset(f"percentiles/{f}", (0, len(targets)), maxshape=(None, len(targets)),
                                            dtype="f4", chunks=True) for f in pct_fields}
        signed_sets = {f: store.create_dataset(f"signed_quantiles/{f}", (0, len(targets)),
                                               maxshape=(None, len(targets)), dtype="f4", chunks=True)
                       for f in signed_fields}
        store.attrs["targets"] = targets
        store.attrs["score_fields"] = list(SCORE_FIELDS)
        store.attrs["settings"] = json.dumps(settings, sort_keys=True)
        for part in parts.load_all(total):
            n = len(part["line"])
            counts["scored"] += n
            counts["skipped"] += len(part["skipped_line"])
            counts["chroms_not_in_genome"].update(str(name) for name in part.get("unknown_chroms", ()))
            for i in range(n):
                values = list(part["scores"][i].ravel()) + list(part["percentiles"][i].ravel()) \
                    + list(part["signed_quantiles"][i].ravel())
                out.write("\t".join([str(part["id"][i]), str(part["chrom"][i]), str(part["pos"][i]), part["ref"][i] or "-",
                                     part["alt"][i] or "-", str(part["flag"][i])]
                                    + [f"{v:.6g}" for v in values]) + "\n")
            for line, variant, reason in zip(part["skipped_line"], part["skipped_text"], part["skipped_reason"]):
                out_skipped.write(f"{line}\t{tsv_field(str(variant))}\t{tsv_field(str(reason))}\n")
            if not n:
                continue
            for name, dataset in sets.items():
                dataset.resize((len(dataset) + n,))
                dataset[-n:] = part[name] if name in ("pos", "line") else part[name].astype(object)
            for j, f in enumerate(SCORE_FIELDS):
                dataset = score_sets[f]
                dataset.resize((len(dataset) + n, len(targets)))
                dataset[-n:] = part["scores"][:, :, j]
            for key, fields, datasets in (("percentiles", pct_fields, pct_sets),
                                          ("signed_quantiles", signed_fields, signed_sets)):
                for j, f in enumerate(fields):
                    dataset = datasets[f]
                    dataset.resize((len(dataset) + n, len(targets)))
                    dataset[-n:] = part[key][:, :, j]
    written = [tsv, h5, skipped]
    if ".vcf" in source.name.lower():
        written.append(annotate_vcf(source, parts, total, Path(f"{outprefix}.vcf"), targets, settings))
    return written


def input_orientation(scores: np.ndarray, flag: str) -> np.ndarray:
    """Scores (targets, len(SCORE_FIELDS)) of the input's REF -> ALT: those of a swapped variant
    (scored as ALT -> REF) with Σref and Σalt traded and the signed scores negated."""
    if flag != "swapped":
        return scores
    out = np.array(scores, copy=True)
    ref, alt = SCORE_FIELDS.index("ref_sum"), SCORE_FIELDS.index("alt_sum")
    out[:, [ref, alt]] = scores[:, [alt, ref]]
    for name in SIGNED:
        out[:, SCORE_FIELDS.index(name)] = -scores[:, SCORE_FIELDS.index(name)]
    return out


def annotate_vcf(source: Path, parts: PartsFolder, total: int, out: Path, targets: list[str], settings: dict) -> Path:
    """The input VCF with INFO fields EPI_SAD_<target> and EPI_LOG2FC_<target> (one value per
    alternate allele, ``.`` for an allele not scored), EPI_FLAG, and the settings record as a
    header line. Every value is Σalt − Σref of the line's own REF and ALT, swapped variants included."""
    from epiformer.io.reading import open_text

    rows = ((int(p["line"][i]), str(p["input_alt"][i]), input_orientation(p["scores"][i], str(p["flag"][i])),
             str(p["flag"][i])) for p in parts.load_all(total) for i in range(len(p["line"])))
    current = next(rows, None)
    columns = {"SAD": SCORE_FIELDS.index("sad"), "LOG2FC": SCORE_FIELDS.index("log2fc")}
    safe = ["".join(c if c.isalnum() else "_" for c in t) for t in targets]
    with open_text(source) as handle, atomic_path(out) as tmp, open(tmp, "w") as dest:
        for line_no, raw in enumerate(handle, 1):
            line = raw.rstrip("\r\n")
            if line.startswith("#CHROM"):
                dest.write(settings_lines(settings, prefix="##"))
                for t, name in zip(targets, safe):
                    dest.write(f'##INFO=<ID=EPI_SAD_{name},Number=A,Type=Float,Description="Epiformer SAD '
                               f'(sum alt - sum ref) for {t}">\n'
                               f'##INFO=<ID=EPI_LOG2FC_{name},Number=A,Type=Float,Description="Epiformer '
                               f'log2((alt+1)/(ref+1)) for {t}">\n')
                dest.write('##INFO=<ID=EPI_FLAG,Number=A,Type=String,Description="Epiformer: ok, swapped, '
                           'ref_mismatch, or . when not scored (reason in the .skipped.tsv)">\n')
            found = {}
            while current is not None and current[0] <= line_no:
                if current[0] == line_no:
                    found[current[1]] = current[2:]
                current = next(rows, None)
            fields = line.split("\t")
            if line.startswith("#") or len(fields) < 8 or not found:
                dest.write(line + "\n")
                continue
            alts = [a.upper() for a in fields[4].split(",")]
            extra = [f"EPI_{label}_{name}=" + ",".join(f"{found[a][0][t, column]:.4g}" if a in found else "."
                                                       for a in alts)
                     for t, name in enumerate(safe) for label, column in columns.items()]
            extra.append("EPI_FLAG=" + ",".join(found[a][1] if a in found else "." for a in alts))
            fields[7] = ";".join(([fields[7]] if fields[7] not in ("", ".") else []) + extra)
            dest.write("\t".join(fields) + "\n")
    return out
