"""Write the demo's extra motifs: one JASPAR CORE vertebrate matrix per transcription-factor family
that the demo's own fifteen do not cover, for the synthetic genomes of other designs
(``epiformer demo-data --grammar drawn``; bench/bench_train.py's genome families).

    pip download pyjaspar==4.0.0 --no-deps -d /tmp/pyjaspar && unzip -q /tmp/pyjaspar/*.whl -d /tmp/pyjaspar
    python scripts/jaspar_motifs.py /tmp/pyjaspar/pyjaspar/data/JASPAR2024.sqlite epiformer/demo/data/drawn_motifs.jaspar

Per family: the latest version of the human factors' matrices (upper-case names, no dimers), 8 to
20 positions wide, the lowest matrix ID first; families are written in the order of their
first matrix ID. The counts are written as JASPAR has them.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from epiformer.demo.motifs import demo_motifs  # noqa: E402
from epiformer.io.writing import atomic_path  # noqa: E402


def family_motifs(database: Path) -> list[tuple[str, str, list[list[float]]]]:
    """(matrix ID, name, counts rows A, C, G, T) per family, as the module says."""
    db = sqlite3.connect(database)
    matrices = db.execute("""
        SELECT m.ID, m.BASE_ID || '.' || m.VERSION, m.NAME, f.VAL FROM MATRIX m
        JOIN MATRIX_ANNOTATION t ON t.ID = m.ID AND t.TAG = 'tax_group' AND t.VAL = 'vertebrates'
        JOIN MATRIX_ANNOTATION f ON f.ID = m.ID AND f.TAG = 'family'
        WHERE m.COLLECTION = 'CORE'
          AND m.VERSION = (SELECT MAX(VERSION) FROM MATRIX v WHERE v.BASE_ID = m.BASE_ID AND v.COLLECTION = 'CORE')
        ORDER BY m.BASE_ID""").fetchall()
    shipped = demo_motifs()
    shipped_ids = {m.matrix_id for m in shipped.values()}
    covered = {family for _, matrix_id, _, family in matrices if matrix_id in shipped_ids}
    chosen: dict[str, tuple[str, str, list[list[float]]]] = {}
    for key, matrix_id, name, family in matrices:
        if family in covered or family in chosen or "::" in name or name != name.upper():
            continue
        data = db.execute("SELECT row, col, val FROM MATRIX_DATA WHERE ID = ?", (key,)).fetchall()
        width = max(col for _, col, _ in data)
        if not 8 <= width <= 20:
            continue
        rows = [[0.0] * width for _ in range(4)]
        for row, col, value in data:
            rows["ACGT".index(row.upper())][col - 1] = float(value)
        chosen[family] = (matrix_id, name, rows)
    return list(chosen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database", type=Path, help="JASPAR's SQLite database (pyjaspar ships it)")
    parser.add_argument("output", type=Path, help="the JASPAR-format file to write")
    args = parser.parse_args()
    motifs = family_motifs(args.database)
    with atomic_path(args.output) as tmp:
        tmp.write_text("".join(f">{matrix_id}\t{name}\n" + "".join(
            f"{base}  [{' '.join(f'{v:g}' for v in row)} ]\n" for base, row in zip("ACGT", rows))
            for matrix_id, name, rows in motifs))
    print(f"wrote {len(motifs)} matrices to {args.output}")


if __name__ == "__main__":
    main()
