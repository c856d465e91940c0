"""Property-based tests for every parser of user input: whatever the text, the result is a value or
the parser's own error naming the problem, never another exception."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epiformer.genome.intervals import parse_region
from epiformer.genome.reader import Genome, GenomeError
from epiformer.genome.targets import TargetsError, read_targets
from epiformer.variants.alleles import VariantError, parse_variant
from epiformer.variants.vcf import Skipped, VariantRecord, VcfError, read_variants

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
BASES = st.text(alphabet="ACGTNacgtnRYKMSWBDHV", min_size=1, max_size=300)


@SETTINGS
@given(TEXT)
def test_variant_strings_parse_or_say_why(text):
    try:
        variant = parse_variant(text)
    except VariantError as err:
        assert str(err)
    else:
        assert variant.pos >= 1 and variant.ref != variant.alt
        assert set(variant.ref + variant.alt) <= set("ACGTN")


@SETTINGS
@given(st.sampled_from(["chr1", "chrX", "1", "chrUn_KI270302v1"]), st.integers(1, 10**9), st.integers(0, 10**6),
       st.booleans())
def test_region_strings_round_trip(chrom, start, length, commas):
    end = start + length
    text = f"{chrom}:{start:,}-{end:,}" if commas else f"{chrom}:{start}-{end}"
    assert parse_region(text) == (chrom, start - 1, end)


@SETTINGS
@given(TEXT)
def test_region_strings_parse_or_say_why(text):
    try:
        chrom, start, end = parse_region(text)
    except GenomeError as err:
        assert str(err)
    else:
        assert chrom and 0 <= start < end


@SETTINGS
@given(st.lists(st.lists(TEXT.filter(lambda s: "\t" not in s and "\n" not in s and "\r" not in s),
                         min_size=1, max_size=9), max_size=8), st.sampled_from(["\n", "\r\n"]))
def test_vcf_lines_are_read_or_reported(rows, newline):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.vcf"
        path.write_text("##fileformat=VCFv4.2" + newline + newline.join("\t".join(r) for r in rows) + newline,
                        newline="")
        try:
            entries = list(read_variants(path))
        except VcfError as err:
            assert str(err)
            return
    for entry in entries:
        assert isinstance(entry, (VariantRecord, Skipped))
        if isinstance(entry, Skipped):
            assert entry.reason and entry.line >= 2


@SETTINGS
@given(st.lists(st.lists(TEXT.filter(lambda s: "\t" not in s and "\n" not in s and "\r" not in s),
                         min_size=1, max_size=8), min_size=1, max_size=6))
def test_targets_tables_are_read_or_reported(rows):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "targets.txt"
        path.write_text("index\tidentifier\tfile\tclip\tsum_stat\tdescription\n" +
                        "\n".join("\t".join(r) for r in rows) + "\n")
        try:
            targets = read_targets(path)
        except TargetsError as err:
            assert str(err)
        else:
            assert all(t.identifier for t in targets)


@SETTINGS
@given(st.lists(BASES, min_size=1, max_size=3), st.integers(1, 80), st.sampled_from(["\n", "\r\n"]))
def test_fasta_line_widths_case_iupac_and_line_ends(sequences, width, newline):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.fa"
        with open(path, "w", newline="") as handle:
            for i, seq in enumerate(sequences):
                handle.write(f">chr{i}{newline}")
                for lo in range(0, len(seq), width):
                    handle.write(seq[lo: lo + width] + newline)
        try:
            genome = Genome(path)
        except GenomeError as err:
            assert str(err)
            return
        with genome:
            for i, seq in enumerate(sequences):
                assert genome.sequence(f"chr{i}", 0, len(seq)) == seq
                encoded = genome.encode(f"chr{i}", 0, len(seq))
                acgt = np.array([c in "ACGTacgt" for c in seq])
                np.testing.assert_array_equal(encoded.sum(axis=0) > 0, acgt)
