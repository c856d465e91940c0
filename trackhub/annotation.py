"""A gene annotation (GTF or BED) as a bigBed beside the predicted tracks.

GTF: one BED12 record per transcript (``transcript_id``), its ``exon`` lines as the blocks, its
``CDS`` lines as the thick part, named by ``gene_name`` (else ``gene_id``, else the transcript).
BED: 3 to 12 columns, filled to BED12 (a record without blocks is one block). The records are
sorted in the genome's chromosome order and written with pybigtools under the standard BED12
autoSql, so UCSC, igv.js and IGV read the names, strands and exons.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from epiformer.errors import UserError
from epiformer.io.reading import open_text

BED12_AUTOSQL = '''table bed12
"Gene annotation"
(
    string  chrom;        "Chromosome"
    uint    chromStart;   "Start, 0-based"
    uint    chromEnd;     "End, exclusive"
    string  name;         "Name"
    uint    score;        "Score, 0-1000"
    char[1] strand;       "+, - or ."
    uint    thickStart;   "Start of the coding part"
    uint    thickEnd;     "End of the coding part"
    uint    reserved;     "Item RGB"
    int     blockCount;   "Number of exons"
    int[blockCount] blockSizes;  "Exon sizes"
    int[blockCount] chromStarts; "Exon starts, from chromStart"
)
'''
_ATTRIBUTE = re.compile(r'(\w+)\s+"([^"]*)"')
Record = tuple[str, int, int, str]     # chrom, start, end, the other nine BED12 fields tab-separated


class AnnotationError(UserError, ValueError):
    """An annotation file that cannot be used, naming the file and line."""


def _bed12_rest(name: str, strand: str, thick: tuple[int, int], start: int,
                blocks: list[tuple[int, int]]) -> str:
    sizes = "".join(f"{e - s}," for s, e in blocks)
    starts = "".join(f"{s - start}," for s, _ in blocks)
    return f"{name}\t0\t{strand}\t{thick[0]}\t{thick[1]}\t0\t{len(blocks)}\t{sizes}\t{starts}"


def _check(path: Path, line: int, chrom: str, start: int, end: int, chrom_sizes: dict[str, int]) -> None:
    if chrom not in chrom_sizes:
        raise AnnotationError(f"{path}, line {line}: chromosome {chrom!r} is not in the genome")
    if not 0 <= start < end <= chrom_sizes[chrom]:
        raise AnnotationError(f"{path}, line {line}: {chrom}:{start}-{end} is not inside {chrom} "
                              f"({chrom_sizes[chrom]:,} bp)")


def read_gtf(path: Path, chrom_sizes: dict[str, int]) -> list[Record]:
    """One BED12 record per transcript of a GTF."""
    transcripts: dict[str, dict] = {}
    with open_text(path) as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip() or text.startswith("#"):
                continue
            fields = text.rstrip("\r\n").split("\t")
            if len(fields) < 9:
                raise AnnotationError(f"{path}, line {line}: a GTF line has 9 tab-separated columns, this one "
                                      f"{len(fields)}")
            chrom, feature, strand, attributes = fields[0], fields[2], fields[6], dict(_ATTRIBUTE.findall(fields[8]))
            if feature not in ("exon", "CDS"):
                continue
            try:
                start, end = int(fields[3]) - 1, int(fields[4])
            except ValueError:
                raise AnnotationError(f"{path}, line {line}: start and end must be integers") from None
            _check(path, line, chrom, start, end, chrom_sizes)
            key = attributes.get("transcript_id")
            if key is None:
                raise AnnotationError(f"{path}, line {line}: an {feature} line without transcript_id")
            record = transcripts.setdefault(key, {"chrom": chrom, "strand": strand if strand in "+-" else ".",
                                                  "name": attributes.get("gene_name") or attributes.get("gene_id")
                                                  or key, "exons": [], "cds": []})
            if record["chrom"] != chrom:
                raise AnnotationError(f"{path}, line {line}: transcript {key} is on {record['chrom']} and {chrom}")
            record["exons" if feature == "exon" else "cds"].append((start, end))
    records = []
    for key, t in transcripts.items():
        blocks = sorted(t["exons"] or t["cds"])
        start, end = blocks[0][0], max(e for _, e in blocks)
        thick = (min(s for s, _ in t["cds"]), max(e for _, e in t["cds"])) if t["cds"] else (start, start)
        records.append((t["chrom"], start, end, _bed12_rest(t["name"], t["strand"], thick, start, blocks)))
    return records


def read_bed(path: Path, chrom_sizes: dict[str, int]) -> list[Record]:
    """BED3 to BED12 records, filled to BED12."""
    records = []
    with open_text(path) as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip() or text.startswith(("#", "track", "browser")):
                continue
            fields = text.rstrip("\r\n").split("\t")
            try:
                chrom, start, end = fields[0], int(fields[1]), int(fields[2])
            except (IndexError, ValueError):
                raise AnnotationError(f"{path}, line {line}: a BED line starts with chrom, start, end") from None
            _check(path, line, chrom, start, end, chrom_sizes)
            name = fields[3] if len(fields) > 3 else f"{chrom}:{start + 1}-{end}"
            strand = fields[5] if len(fields) > 5 and fields[5] in ("+", "-") else "."
            thick = (int(fields[6]), int(fields[7])) if len(fields) > 7 else (start, start)
            if len(fields) >= 12:
                sizes = [int(v) for v in fields[10].rstrip(",").split(",")]
                offsets = [int(v) for v in fields[11].rstrip(",").split(",")]
                blocks = [(start + o, start + o + n) for o, n in zip(offsets, sizes)]
            else:
                blocks = [(start, end)]
            records.append((chrom, start, end, _bed12_rest(name, strand, thick, start, blocks)))
    return records


def write_annotation_bigbed(source: str | os.PathLike, chrom_sizes: dict[str, int], out: str | os.PathLike) -> int:
    """Convert a GTF (``.gtf``, ``.gff``) or BED annotation, plain or gzipped, to a BED12 bigBed;
    returns the records written."""
    import pybigtools

    source = Path(source)
    if not source.is_file():
        raise AnnotationError(f"annotation {source}: no such file")
    gtf = source.name.lower().removesuffix(".gz").endswith((".gtf", ".gff", ".gff2"))
    records = (read_gtf if gtf else read_bed)(source, chrom_sizes)
    if not records:
        raise AnnotationError(f"annotation {source} holds no {'transcript' if gtf else 'record'}")
    order = {c: i for i, c in enumerate(chrom_sizes)}
    records.sort(key=lambda r: (order[r[0]], r[1], r[2]))
    out = Path(out)
    partial = out.with_name(f".{out.stem}.{os.getpid()}.partial.bb")    # pybigtools goes by the extension
    try:
        pybigtools.open(str(partial), "w").write(dict(chrom_sizes), records, autosql=BED12_AUTOSQL)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return len(records)
