"""Specificity tracks: each target's log2(x+1) minus the mean over targets, written by the merge,
listed in the manifest, composited in the hub and listed apart by the server."""
import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pyBigWig
import pytest

from epiformer.cli import main
from epiformer.demo.synthetic_genome import CELL_TYPES
from epiformer.precompute import PrecomputeError, merge_tracks

from .test_trackhub import check_tracks, read_stanzas


@pytest.fixture(scope="module")
def specific(precomputed, tmp_path_factory):
    """A copy of the session's precompute folder merged again with --specificity."""
    folder = shutil.copytree(precomputed, tmp_path_factory.mktemp("specificity") / "pc")
    assert main(["precompute-merge", str(folder), "-q", "--specificity"]) == 0
    return folder


def test_each_track_is_the_target_minus_the_mean_over_targets(specific, precomputed, capsys):
    manifest = json.loads((specific / "manifest.json").read_text())
    items = manifest["specificity"]["tracks"]
    assert [(i["target"], i["kind"]) for i in items] == [(c, "specificity") for c in CELL_TYPES]
    assert "minus its mean over all targets" in manifest["specificity"]["definition"]
    assert [t["sha256"] for t in manifest["tracks"]] == \
        [t["sha256"] for t in json.loads((precomputed / "manifest.json").read_text())["tracks"]], "tracks unchanged"
    chrom = "chr2"
    predicted, derived = [], []
    for target, item in zip(manifest["tracks"], items):
        with pyBigWig.open(str(specific / target["file"])) as bw:
            predicted.append(bw.values(chrom, 0, bw.chroms(chrom), numpy=True)[::128])
        with pyBigWig.open(str(specific / item["file"])) as bw:
            assert bw.chroms() == manifest["genome"]["chrom_sizes"]
            derived.append(bw.values(chrom, 0, bw.chroms(chrom), numpy=True)[::128])
    logged = np.log2(np.array(predicted) + 1)
    expected = logged - logged.mean(0)
    derived = np.array(derived)
    np.testing.assert_array_equal(np.isnan(derived), np.isnan(expected))      # bins without prediction stay empty
    assert (~np.isnan(expected)).sum() > 1000
    np.testing.assert_allclose(derived, expected, atol=1e-5)
    assert np.nanmax(np.abs(derived.sum(0))) < 1e-4, "they sum to zero over the cell types at every bin"


def test_a_plain_merge_removes_them_and_one_target_has_none(specific, tmp_path, capsys):
    folder = shutil.copytree(specific, tmp_path / "pc")
    assert main(["precompute-merge", str(folder), "-q"]) == 0
    assert "specificity" not in json.loads((folder / "manifest.json").read_text())
    assert not list((folder / "tracks").glob("*.specificity.bw"))
    run = json.loads((folder / "run.json").read_text())
    run["targets"] = run["targets"][:1]
    (folder / "run.json").write_text(json.dumps(run))
    with pytest.raises(PrecomputeError, match="needs two targets or more"):
        merge_tracks(folder, progress=False, specificity=True)


def test_the_hub_shows_them_on_one_scale_above_and_below_the_mean(specific, tmp_path):
    from epiformer.trackhub import build_hub

    result = build_hub(specific, tmp_path / "hub")
    stanzas = read_stanzas(tmp_path / "hub" / "hub.txt")[2:]
    check_tracks(stanzas, lambda url: tmp_path / "hub" / url)
    composite = {t["track"]: t for t in stanzas}["epiformer_specificity"]
    assert composite["compositeTrack"] == "on" and composite["autoScale"] == "group", "comparable across cell types"
    assert composite["subGroup1"].split()[2:] == [f"{c}={c}" for c in CELL_TYPES]
    leaves = [t for t in stanzas if t.get("parent") == "epiformer_specificity"]
    colors = {t["name"]: t["color"] for t in json.loads((specific / "manifest.json").read_text())["tracks"]}
    assert [t["color"] for t in leaves] == [colors[c] for c in CELL_TYPES]
    assert {t["altColor"] for t in leaves} == {"150,150,150"}, "below the mean in grey"
    assert len(result["tracks"]) == 2 * len(CELL_TYPES)
    session = {t["name"]: t for t in json.loads((tmp_path / "hub" / "igv_session.json").read_text())["tracks"]}
    assert session["MGC specificity"]["autoscaleGroup"] == "specificity"
    assert session["MGC specificity"]["altColor"] == "rgb(150,150,150)" and "altColor" not in session["MGC"]
    desktop = ET.parse(tmp_path / "hub" / "igv_session.xml").getroot()
    groups = {t.get("name"): t.get("autoscaleGroup") for t in desktop.iter("Track")}
    assert groups["MGC specificity"] == "4" and groups["MGC"] == "1"


def test_the_servers_track_list_keeps_them_apart(specific, tmp_path):
    from epiformer.server import create_app

    app = create_app({"precompute_dir": str(specific), "hub_dir": str(tmp_path / "hub"), "log_requests": False})
    client = app.test_client()
    doc = client.get("/api/tracks").json
    assert [t["name"] for t in doc["tracks"]] == list(CELL_TYPES)
    assert [t["name"] for t in doc["specificity"]] == [f"{c} specificity" for c in CELL_TYPES]
    assert doc["interpretation"] == []
    colors = {t["name"]: t["color"] for t in doc["tracks"]}
    assert all(t["color"] == colors[t["target"]] for t in doc["specificity"])
    assert client.get(doc["specificity"][0]["url"].split("localhost", 1)[-1]).status_code == 200
