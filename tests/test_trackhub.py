"""Track hubs: the hub text files checked against the UCSC rules, the .2bit writer, IGV sessions."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import py2bit
import pyBigWig
import pytest

from epiformer.cli import main
from epiformer.demo.synthetic_genome import CELL_TYPES
from epiformer.trackhub import HubError, HubOptions, build_hub, write_twobit

from .helpers import write_fasta

REQUIRED_HUB = ("hub", "shortLabel", "longLabel", "email")
REQUIRED_TRACK = ("track", "shortLabel", "longLabel", "type")


def read_stanzas(path: Path) -> list[dict[str, str]]:
    """Blank-line separated 'key value' stanzas; leading whitespace ignored, as UCSC reads them."""
    stanzas, current = [], {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            if current:
                stanzas.append(current)
            current = {}
        elif not line.startswith("#"):
            key, _, value = line.partition(" ")
            assert key not in current, f"{path}: {key} set twice in one stanza"
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def check_tracks(tracks: list[dict[str, str]], resolve) -> None:
    """The trackDb rules the hub relies on (hubCheck's, for the settings used)."""
    names = [t["track"] for t in tracks]
    assert len(names) == len(set(names)), "track names are unique across the hub"
    by_name = {t["track"]: t for t in tracks}
    for t in tracks:
        for key in REQUIRED_TRACK:
            assert key in t, f"track {t.get('track')} lacks {key}"
        assert t["track"][0].isalpha() and t["track"].replace("_", "").isalnum()
        assert len(t["shortLabel"]) <= 17 and len(t["longLabel"]) <= 76
        assert t["type"].startswith(("bigWig", "bigBed")), "igv.js loads bigWig and bigBed tracks"
        if "parent" in t:
            assert t["parent"].split()[0] in by_name, f"{t['track']}'s parent does not exist"
        is_container = "compositeTrack" in t or "container" in t
        assert ("bigDataUrl" in t) != is_container
        if "bigDataUrl" in t and t["type"].startswith("bigBed"):
            import bbi

            with bbi.open(str(resolve(t["bigDataUrl"]))) as bb:
                assert bb.is_bigbed
        elif "bigDataUrl" in t:
            with pyBigWig.open(str(resolve(t["bigDataUrl"]))) as bw:
                assert bw.isBigWig()
            color = [int(c) for c in t["color"].split(",")]
            assert len(color) == 3 and all(0 <= c <= 255 for c in color)
    composite = next(t for t in tracks if t.get("compositeTrack") == "on")
    groups = dict(item.split("=") for item in composite["subGroup1"].split()[2:])
    members = [t for t in tracks if t.get("parent", "").split()[:1] == [composite["track"]]]
    assert {t["subGroups"].split("=")[1] for t in members} == set(groups)
    assert composite["autoScale"] == "group"
    assert composite["viewLimits"].split(":")[1].isdigit(), "igv.js reads viewLimits as integers"
    lo, hi = (float(v) for v in composite["viewLimits"].split(":"))
    assert 0 == lo < hi
    default, *_ = composite["maxHeightPixels"].split(":")
    assert int(default) >= 8
    overlay = next(t for t in tracks if t.get("container") == "multiWig")
    assert len([t for t in tracks if t.get("parent") == overlay["track"]]) == len(members)


@pytest.fixture(scope="module")
def hub(precomputed, tmp_path_factory) -> tuple[Path, dict]:
    hubdir = tmp_path_factory.mktemp("hub")
    return hubdir, build_hub(precomputed, hubdir)


def test_single_file_hub_follows_the_rules(hub, precomputed):
    hubdir, result = hub
    assert result["assembly_hub"] and result["genome"] == "demo"
    stanzas = read_stanzas(hubdir / "hub.txt")
    head, genome, tracks = stanzas[0], stanzas[1], stanzas[2:]
    for key in REQUIRED_HUB:
        assert key in head
    assert head["useOneFile"] == "on" and "genomesFile" not in head
    assert len(head["shortLabel"]) <= 17 and len(head["longLabel"]) <= 76
    assert (hubdir / head["descriptionUrl"]).is_file()
    assert genome["genome"] == "demo"
    for key in ("twoBitPath", "organism", "defaultPos", "scientificName", "description"):
        assert key in genome
    sizes = dict(line.split("\t") for line in (hubdir / genome["chromSizes"]).read_text().splitlines())
    chrom, span = genome["defaultPos"].split(":")
    start, end = (int(v) for v in span.split("-"))
    assert 1 <= start < end <= int(sizes[chrom])
    with py2bit.open(str(hubdir / genome["twoBitPath"])) as twobit:
        assert {c: str(n) for c, n in twobit.chroms().items()} == sizes
    check_tracks(tracks, lambda url: hubdir / url)
    manifest = json.loads((precomputed / "manifest.json").read_text())
    colors = {t["name"]: t["color"] for t in manifest["tracks"]}
    leaves = [t for t in tracks if t.get("parent", "").endswith(" on")]
    assert [t["shortLabel"] for t in leaves] == list(CELL_TYPES)
    assert [t["color"] for t in leaves] == [colors[name] for name in CELL_TYPES]


def test_classic_hub_is_the_same_hub(hub):
    hubdir, _ = hub
    head = read_stanzas(hubdir / "hub.multi.txt")[0]
    genomes = read_stanzas(hubdir / head["genomesFile"])
    assert len(genomes) == 1 and "twoBitPath" in genomes[0]
    track_db = hubdir / genomes[0]["trackDb"]
    tracks = read_stanzas(track_db)
    check_tracks(tracks, lambda url: Path(urljoin(f"{track_db}", url)))
    single = read_stanzas(hubdir / "hub.txt")[2:]
    assert [t["track"] for t in tracks] == [t["track"] for t in single]


def test_track_files_are_named_by_content(hub, precomputed):
    hubdir, result = hub
    for track in json.loads((precomputed / "manifest.json").read_text())["tracks"]:
        linked = hubdir / "tracks" / f"{Path(track['file']).stem}.{track['sha256'][:8]}.bw"
        assert linked.read_bytes() == (precomputed / track["file"]).read_bytes()
    assert sorted(result["tracks"]) == sorted(f"tracks/{p.name}" for p in (hubdir / "tracks").iterdir())


def test_absolute_urls_under_base_url(precomputed, tmp_path):
    build_hub(precomputed, tmp_path / "hub", HubOptions(base_url="https://cdn.example.org/hubs/demo/"))
    stanzas = read_stanzas(tmp_path / "hub" / "hub.txt")
    assert stanzas[1]["twoBitPath"] == "https://cdn.example.org/hubs/demo/genome/demo.2bit"
    urls = [t["bigDataUrl"] for t in stanzas[2:] if "bigDataUrl" in t]
    assert urls and all(u.startswith("https://cdn.example.org/hubs/demo/tracks/") for u in urls)
    session = json.loads((tmp_path / "hub" / "igv_session.json").read_text())
    assert session["tracks"][0]["url"].startswith("https://cdn.example.org/hubs/demo/tracks/")


def test_ucsc_hosted_genome_gets_a_plain_hub(precomputed, tmp_path):
    build_hub(precomputed, tmp_path / "hub", HubOptions(assembly_hub=False))
    genome = read_stanzas(tmp_path / "hub" / "hub.txt")[1]
    assert genome == {"genome": "demo"}


def test_igv_sessions_list_every_track(hub):
    hubdir, _ = hub
    session = json.loads((hubdir / "igv_session.json").read_text())
    assert session["reference"]["twoBitURL"] == "genome/demo.2bit"
    assert [t["name"] for t in session["tracks"]] == list(CELL_TYPES)
    assert all((hubdir / t["url"]).is_file() and t["format"] == "bigwig" for t in session["tracks"])
    assert {t["autoscaleGroup"] for t in session["tracks"]} == {"epiformer"}
    root = ET.parse(hubdir / "igv_session.xml").getroot()
    assert root.tag == "Session" and (hubdir / root.get("genome")).is_file()
    assert (hubdir / f"{root.get('genome')}.fai").is_file()
    paths = [r.get("path") for r in root.iter("Resource")]
    assert len(paths) == 8 and all((hubdir / p).is_file() for p in paths)
    assert [t.get("id") for t in root.iter("Track")] == paths


def test_twobit_round_trip_keeps_case_and_ns(tmp_path):
    rng = np.random.default_rng(2)
    records = {"chrA": "NNNN" + "".join(rng.choice(list("ACGTacgt"), 1001)) + "NNRYN" + "acgtACGT",
               "chrB": "A", "chrC": "nnnnACGT"}
    fasta = write_fasta(tmp_path / "g.fa", records, width=13)
    write_twobit(fasta, tmp_path / "g.2bit")
    with py2bit.open(str(tmp_path / "g.2bit"), True) as twobit:
        assert twobit.chroms() == {name: len(seq) for name, seq in records.items()}
        for name, seq in records.items():
            expected = "".join(c if c in "ACGTacgt" else "N" for c in seq)
            assert twobit.sequence(name, 0, len(seq)) == expected
        assert twobit.hardMaskedBlocks("chrA", 0, 1_100) == [(0, 4), (1005, 1010)]


def test_hub_command_and_bad_input(precomputed, tmp_path, capsys):
    assert main(["hub", str(precomputed), "-o", str(tmp_path / "hub")]) == 0
    assert "wrote the assembly hub for demo with 8 tracks" in capsys.readouterr().out
    assert main(["hub", str(tmp_path / "nothing"), "-o", str(tmp_path / "hub2")]) == 2
    assert "manifest.json: no such file" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((precomputed / "manifest.json").read_text())
    manifest["genome"]["name"] = "my genome"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HubError, match="genome name 'my genome'"):
        build_hub(broken, tmp_path / "hub3")
    manifest["genome"]["name"] = "demo"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HubError, match="tracks/HIP.bw .* is missing"):
        build_hub(broken, tmp_path / "hub3")


GTF = """\
chr1\ttest\ttranscript\t1001\t3000\t.\t+\t.\tgene_id "g1"; transcript_id "t1"; gene_name "ALPHA";
chr1\ttest\texon\t1001\t1200\t.\t+\t.\tgene_id "g1"; transcript_id "t1"; gene_name "ALPHA";
chr1\ttest\texon\t2501\t3000\t.\t+\t.\tgene_id "g1"; transcript_id "t1"; gene_name "ALPHA";
chr1\ttest\tCDS\t1101\t1200\t.\t+\t0\tgene_id "g1"; transcript_id "t1"; gene_name "ALPHA";
chr1\ttest\tCDS\t2501\t2700\t.\t+\t0\tgene_id "g1"; transcript_id "t1"; gene_name "ALPHA";
chr2\ttest\texon\t501\t900\t.\t-\t.\tgene_id "g2"; transcript_id "t2";
"""


def test_gene_annotation_becomes_a_bigbed_track(precomputed, tmp_path, capsys):
    import bbi

    gtf = tmp_path / "genes.gtf"
    gtf.write_text(GTF)
    result = build_hub(precomputed, tmp_path / "hub", HubOptions(annotation=str(gtf)))
    stanzas = read_stanzas(tmp_path / "hub" / "hub.txt")[2:]
    check_tracks(stanzas, lambda url: tmp_path / "hub" / url)
    genes = next(t for t in stanzas if t["track"] == "epiformer_annotation")
    assert genes["type"] == "bigBed 12" and genes["bigDataUrl"] == result["annotation"]
    with bbi.open(str(tmp_path / "hub" / genes["bigDataUrl"])) as bb:
        first = bb.fetch_intervals("chr1", 0, 10_000)
        second = bb.fetch_intervals("chr2", 0, 10_000)
    assert list(first["name"]) == ["ALPHA"] and list(first["start"]) == [1000] and list(first["end"]) == [3000]
    assert [int(first[k][0]) for k in ("thickStart", "thickEnd", "blockCount")] == [1100, 2700, 2]
    assert first["blockSizes"][0] == "200,500," and first["chromStarts"][0] == "0,1500,"
    assert list(second["name"]) == ["g2"] and list(second["strand"]) == ["-"]
    session = json.loads((tmp_path / "hub" / "igv_session.json").read_text())
    assert session["tracks"][0] == {"name": "genes.gtf", "type": "annotation", "format": "bigbed",
                                    "url": result["annotation"], "displayMode": "EXPANDED"}
    root = ET.parse(tmp_path / "hub" / "igv_session.xml").getroot()
    assert result["annotation"] in [r.get("path") for r in root.iter("Resource")]
    bed = tmp_path / "elements.bed"
    bed.write_text("chr1\t100\t400\tenhancer:SOX9\t0\t.\nchr2\t50\t80\n")
    again = build_hub(precomputed, tmp_path / "hub", HubOptions(annotation=str(bed)))
    assert again["annotation"] != result["annotation"] and not (tmp_path / "hub" / result["annotation"]).exists()
    with bbi.open(str(tmp_path / "hub" / again["annotation"])) as bb:
        assert list(bb.fetch_intervals("chr1", 0, 1000)["name"]) == ["enhancer:SOX9"]
    for text, message in (("chrZ\t1\t10\n", "line 1: chromosome 'chrZ' is not in the genome"),
                          ("chr1\tx\t10\n", "line 1: a BED line starts with chrom, start, end"),
                          ("chr1\t5\t999999999\n", "is not inside chr1")):
        bad = tmp_path / "bad.bed"
        bad.write_text(text)
        assert main(["hub", str(precomputed), "-o", str(tmp_path / "hub"), "--annotation", str(bad)]) == 2
        assert message in capsys.readouterr().err
    assert main(["hub", str(precomputed), "-o", str(tmp_path / "hub2"), "--annotation", str(gtf)]) == 0
    assert (tmp_path / "hub2" / "annotation" / "source.json").is_file()


def test_the_server_serves_the_annotation_it_is_given(precomputed, tmp_path, demo_data):
    from epiformer.server import create_app

    first = create_app({"precompute_dir": str(precomputed), "hub_dir": str(tmp_path / "hub"), "log_requests": False,
                        "annotation": str(demo_data / "annotation.bed")})
    doc = first.test_client().get("/api/tracks").json
    assert doc["annotation"]["name"] == "annotation.bed" and doc["annotation"]["url"].endswith(".bb")
    path = doc["annotation"]["url"].split("/hub/", 1)[1]
    assert first.test_client().get(f"/hub/{path}").status_code == 200
    assert [t["name"] for t in doc["tracks"]] == list(CELL_TYPES)
    without = create_app({"precompute_dir": str(precomputed), "hub_dir": str(tmp_path / "hub"), "log_requests": False})
    assert without.test_client().get("/api/tracks").json["annotation"] is None, "the hub is rebuilt without it"
    assert not (tmp_path / "hub" / "annotation").exists()
