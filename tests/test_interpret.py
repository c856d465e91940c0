"""epiformer interpret: contribution and mutagenesis tracks into a precompute folder."""
import json
import shutil

import numpy as np
import pyBigWig
import pytest
import torch

import epiformer.interpret.interpret_job as interpret_module
from epiformer.cli import main
from epiformer.demo.synthetic_genome import CELL_TYPES
from epiformer.inference.predictor import open_predictor
from epiformer.inference.settings import InferenceSettings, ModelSetOptions
from epiformer.interpret.interpret_job import InterpretError, InterpretOptions, interpret_job, top_regions
from epiformer.variants.mutagenesis import saturation_mutagenesis
from epiformer.variants.scorer import VariantScorer

REGIONS = "chr1\t150000\t150020\nchr2\t80000\t80012\nchr1\t150010\t150030\n"     # the last two chr1 ones merge


@pytest.fixture
def folder(precomputed, tmp_path):
    """A copy of the session's precompute folder, which interpret adds to."""
    return shutil.copytree(precomputed, tmp_path / "pc")


@pytest.fixture
def job(folder, demo_data, model_path, tmp_path):
    bed = tmp_path / "regions.bed"
    bed.write_text(REGIONS)
    models = ModelSetOptions((str(model_path),))

    def run(method="grad", settings=None, **options):
        chosen = settings or InferenceSettings(device="cpu", conservation=str(demo_data / "conservation.bw"))
        return interpret_job(models, demo_data / "genome.fa", chosen, folder, bed,
                             options=InterpretOptions(method=method, progress=False, **options), log=lambda _: None)
    return run


@pytest.fixture
def model_path(precomputed):
    return precomputed.parent / "model.pth.tar"


def values(path, chrom, start, end):
    with pyBigWig.open(str(path)) as bw:
        return bw.values(chrom, start, end, numpy=True)


def open_demo(model_path, demo_data, **settings):
    return open_predictor(ModelSetOptions((str(model_path),)), demo_data / "genome.fa",
                          InferenceSettings(device="cpu", conservation=str(demo_data / "conservation.bw"), **settings))


def test_ism_tracks_equal_epiformer_ism(folder, demo_data, model_path, tmp_path):
    bed = tmp_path / "regions.bed"
    bed.write_text(REGIONS)
    assert main(["interpret", "-m", str(model_path), "--fa", str(demo_data / "genome.fa"), "--seqcons",
                 str(demo_data / "conservation.bw"), "--bed", str(bed), "-o", str(folder), "--method", "ism",
                 "--device", "cpu", "-q"]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    record = manifest["interpretation"]
    assert (record["method"], record["regions"], record["bases"]) == ("ism", 2, 30 + 12)
    assert record["settings"]["score_bp"] == 1024 and record["settings"]["method"] == "ism"
    assert len(record["tracks"]) == 8 * 6 and {t["kind"] for t in record["tracks"]} == \
        {"contrib", "ism_A", "ism_C", "ism_G", "ism_T", "ism_max"}
    with open_demo(model_path, demo_data) as predictor:
        expected = saturation_mutagenesis(VariantScorer(predictor), "chr1", 150_000, 150_030)
    for t, target in enumerate(expected.targets[:3]):
        effects = expected.effects[t]                                      # (positions, 4)
        for b, base in enumerate("ACGT"):
            np.testing.assert_allclose(values(folder / f"tracks/{target}.ism_{base}.bw", "chr1", 150_000, 150_030),
                                       effects[:, b], rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(values(folder / f"tracks/{target}.ism_max.bw", "chr1", 150_000, 150_030),
                                   np.abs(effects).max(axis=1), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(values(folder / f"tracks/{target}.contrib.bw", "chr1", 150_000, 150_030),
                                   -effects.sum(axis=1) / 3, rtol=1e-5, atol=1e-9)
    assert np.isnan(values(folder / "tracks/HIP.contrib.bw", "chr1", 150_030, 150_040)).all(), "only the regions"
    entry = next(t for t in record["tracks"] if t["file"] == "tracks/HIP.ism_A.bw")
    assert entry["bytes"] == (folder / "tracks/HIP.ism_A.bw").stat().st_size


def test_gradient_times_input_and_shards(job, folder, demo_data, model_path, monkeypatch):
    monkeypatch.setattr(interpret_module, "REGIONS_PER_PART", 1)
    settings = InferenceSettings(device="cpu", conservation=str(demo_data / "conservation.bw"), shifts=(0,))
    assert job(settings=settings, shard=(1, 2))["files"] == [], "the other shard's parts are still to come"
    done = job(settings=settings, shard=(0, 2))
    assert len(done["files"]) == 8 and done["interpretation"]["method"] == "grad"
    contrib = values(folder / "tracks/MGC.contrib.bw", "chr2", 80_000, 80_012)
    with open_demo(model_path, demo_data, shifts=(0,)) as predictor:
        scorer = VariantScorer(predictor)
        engine = scorer.engine
        window = engine.window_for(80_006)
        x = engine.encode_coded(scorer.encode("chr2", window, []))[0].clone().requires_grad_(True)
        out = (engine.model(x) + engine.model(x.flip(1, 2)).flip(2)) / 2          # reverse complement on
        lo = (80_000 - window - engine.output_offset) // 128
        out[0, engine.target_names.index("MGC"), lo: lo + 1].sum().backward()
        expected = (x.grad * x).sum(dim=1)[0, 80_000 - window: 80_012 - window].detach().numpy()
    np.testing.assert_allclose(contrib, expected, rtol=1e-4, atol=1e-9)
    assert np.abs(contrib).max() > 0
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "interpret.parts").glob("part-*.npz")}
    job(settings=settings)
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "interpret.parts").glob("part-*.npz")} == before, \
        "a rerun keeps the finished parts"
    with pytest.raises(InterpretError, match="holds another interpret run"):
        job(settings=settings, method="ism")


def test_bad_regions_and_flags(job, folder, demo_data, model_path, tmp_path, capsys):
    common = ["interpret", "-m", str(model_path), "--fa", str(demo_data / "genome.fa"), "--seqcons",
              str(demo_data / "conservation.bw"), "-o", str(folder), "--device", "cpu", "-q"]
    for text, message in (("chr1\t100\t9000\n", "region 1: 8,900 bp; interpret takes regions of at most"),
                          ("chrZ\t1\t10\nchrZ\t20\t30\n", "skipped 2 intervals on 1 chromosome(s) not in the genome"),
                          ("", "holds no region")):
        bed = tmp_path / "bad.bed"
        bed.write_text(text)
        assert main(common + ["--bed", str(bed)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert main(common + ["--top", "0"]) == 2
    assert "--top must be at least 1" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    bed = tmp_path / "ok.bed"
    bed.write_text("chr1\t100\t110\n")
    assert main(common[:-5] + ["-o", str(empty), "--device", "cpu", "-q", "--bed", str(bed)]) == 2
    assert "manifest.json: no such file" in capsys.readouterr().err


def test_top_peaks_are_the_strongest_predicted_bins(folder):
    regions = top_regions(folder, 5)
    assert len(regions) == 5 and all(end - start == 500 for _, start, end in regions)
    manifest = json.loads((folder / "manifest.json").read_text())
    strongest = []
    for chrom, start, end in regions:
        peak = max(np.nanmax(values(folder / t["file"], chrom, start, end)) for t in manifest["tracks"])
        strongest.append(peak)
    with pyBigWig.open(str(folder / manifest["tracks"][0]["file"])) as bw:
        chrom, size = next(iter(bw.chroms().items()))
        typical = np.nanmedian(bw.values(chrom, 0, size, numpy=True))
    assert min(strongest) > typical
    assert torch.is_grad_enabled(), "interpretation leaves autograd as it found it"


def test_the_hub_gets_contribution_and_mutagenesis_composites(job, folder, tmp_path):
    import xml.etree.ElementTree as ET

    from epiformer.trackhub import build_hub

    from .test_trackhub import check_tracks, read_stanzas

    job(method="ism")
    result = build_hub(folder, tmp_path / "hub")
    stanzas = read_stanzas(tmp_path / "hub" / "hub.txt")[2:]
    check_tracks(stanzas, lambda url: tmp_path / "hub" / url)
    by_name = {t["track"]: t for t in stanzas}
    contrib, ism = by_name["epiformer_contrib"], by_name["epiformer_ism"]
    assert contrib["compositeTrack"] == "on" and contrib["logo"] == "on", "sequence logos when zoomed in"
    assert contrib["subGroup1"].split()[2:] == [f"{c}={c}" for c in CELL_TYPES]
    leaves = [t for t in stanzas if t.get("parent") == "epiformer_contrib"]
    assert [t["subGroups"] for t in leaves] == [f"celltype={c}" for c in CELL_TYPES]
    assert all(t["logo"] == "on" and t["bigDataUrl"].endswith(".bw") for t in leaves)
    manifest = json.loads((folder / "manifest.json").read_text())
    colors = {t["name"]: t["color"] for t in manifest["tracks"]}
    assert [t["color"] for t in leaves] == [colors[c] for c in CELL_TYPES], "in the cell type's colour"
    assert ism["subGroup2"] == "base Substitution A=A C=C G=G T=T max=max"
    bases = [t for t in stanzas if t.get("parent") == "epiformer_ism"]
    assert len(bases) == 5 * len(CELL_TYPES)
    assert {t["subGroups"] for t in bases if t["subGroups"].startswith("celltype=MGC ")} == \
        {f"celltype=MGC base={b}" for b in ("A", "C", "G", "T", "max")}
    assert {t["color"] for t in bases if t["subGroups"].endswith("base=A")} == {"0,150,0"}
    assert len(result["tracks"]) == 8 + 8 * 6 and all((tmp_path / "hub" / f).is_file() for f in result["tracks"])
    session = json.loads((tmp_path / "hub" / "igv_session.json").read_text())
    groups = {t["name"]: t["autoscaleGroup"] for t in session["tracks"]}
    assert groups["HIP"] == "epiformer" and groups["HIP contrib"] == "contrib" and groups["HIP ism_A"] == "ism"
    paths = [r.get("path") for r in ET.parse(tmp_path / "hub" / "igv_session.xml").getroot().iter("Resource")]
    assert len(paths) == 8 + 8 * 6 and all((tmp_path / "hub" / p).is_file() for p in paths)


def test_a_batch_of_regions_gives_each_its_own_gradient(demo_data, model_path):
    from epiformer.interpret.attribution import gradient_contributions

    regions = [("chr1", 150_000, 150_020), ("chr2", 80_000, 80_012), ("chr1", 200_000, 200_128)]
    with open_demo(model_path, demo_data, shifts=(-1, 0, 1)) as predictor:
        scorer = VariantScorer(predictor)
        batched = gradient_contributions(scorer, regions)
        alone = [gradient_contributions(scorer, [region])[0] for region in regions]
    for a, b, (_, start, end) in zip(batched, alone, regions):
        assert a.shape == (8, end - start)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9)


def test_the_servers_track_list_keeps_interpretation_apart(job, folder, tmp_path):
    from epiformer.server import create_app

    job(method="grad")
    app = create_app({"precompute_dir": str(folder), "hub_dir": str(tmp_path / "hub"), "log_requests": False})
    doc = app.test_client().get("/api/tracks").json
    assert [t["name"] for t in doc["tracks"]] == list(CELL_TYPES), "the predicted tracks only"
    assert [(t["target"], t["kind"]) for t in doc["interpretation"]] == [(c, "contrib") for c in CELL_TYPES]
    assert all(t["url"].startswith("http") and "/hub/tracks/" in t["url"] for t in doc["interpretation"])
    colors = {t["name"]: t["color"] for t in doc["tracks"]}
    assert all(t["color"] == colors[t["target"]] for t in doc["interpretation"]), "r,g,b like the predicted tracks"
    assert app.test_client().get(doc["interpretation"][0]["url"].split("localhost", 1)[-1]).status_code == 200
