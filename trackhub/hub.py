"""A UCSC / IGV track hub from a precompute folder's manifest.

HUBDIR/
  hub.txt                      the hub in the single-file form (``useOneFile on``): paste its URL
                               into UCSC, open it with igv.js; the page and the links use it
  hub.multi.txt, genomes.txt,  the same hub in the classic three-file form
  GENOME/trackDb.txt
  description.html             what the tracks are: model, genome, parameters
  tracks/TARGET.SHA8.bw        the bigWigs (hard links, else copies), named by their content so
                               that a regenerated track gets a new URL and caches never mix versions;
                               with them the interpretation tracks ``epiformer interpret`` recorded
                               (TARGET.contrib.SHA8.bw, TARGET.ism_A.SHA8.bw, ...), in composites of
                               their own (contributions with ``logo on``; substitutions by base),
                               and the specificity tracks precompute --specificity wrote
                               (TARGET.specificity.SHA8.bw: above the mean over cell types in the
                               cell type's colour, below it in grey)
  genome/GENOME.2bit, .chrom.sizes, .fa, .fa.fai
                               the genome for assembly hubs, igv.js and IGV desktop (offline)
  igv_session.json             igv.js browser options (reference and tracks)
  igv_session.xml              IGV desktop session
  SHA256SUMS                   the SHA-256 of every file above (``sha256sum -c``), the files' ETags
  etags.nginx                  the same ETags as an nginx map, for deploy/nginx.conf
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from epiformer.errors import UserError
from epiformer.genome.reader import sequence_file_kind
from epiformer.io.reading import sha256_file
from epiformer.io.writing import atomic_path
from epiformer.trackhub.annotation import write_annotation_bigbed
from epiformer.trackhub.checksums import write_sha256sums
from epiformer.trackhub.twobit import write_fasta, write_twobit

# Assemblies UCSC hosts (a hub for them needs no sequence); anything else becomes an assembly hub.
UCSC_GENOMES = frozenset({"hg38", "hg19", "hg18", "hs1", "mm39", "mm10", "mm9", "rn7", "rn6", "danRer11",
                          "dm6", "ce11", "sacCer3", "galGal6", "bosTau9", "susScr11", "rheMac10", "panTro6",
                          "canFam6", "xenTro10"})
SHORT_LABEL, LONG_LABEL = 17, 76
# Mutagenesis tracks in the usual base colours (A green, C blue, G amber, T red), the largest |effect| grey.
BASE_COLORS = {"ism_A": "0,150,0", "ism_C": "0,0,230", "ism_G": "230,160,0", "ism_T": "210,0,0",
               "ism_max": "90,90,90"}
# predicted signal, contributions, effects, differences from the mean over cell types
AUTOSCALE_GROUPS = {"epiformer": "1", "contrib": "2", "ism": "3", "specificity": "4"}
NEGATIVE_COLOR = "150,150,150"          # specificity below the mean over cell types
DERIVED_SECTIONS = ("specificity", "interpretation")    # manifest sections of tracks made from the predictions


class HubError(UserError, ValueError):
    """A hub that cannot be built, with a message naming the file or setting."""


@dataclass
class HubOptions:
    """Names, contact and where the files will be served from."""

    name: str = "epiformer"
    short_label: str = "Epiformer"
    long_label: str = "Epiformer predicted chromatin accessibility per cell type"
    email: str = "epiformer-hub@example.org"
    base_url: str | None = None       # absolute URL prefix of HUBDIR; default: relative URLs
    assembly_hub: bool | None = None  # default: for genomes UCSC does not host
    organism: str | None = None
    scientific_name: str | None = None
    annotation: str | None = None     # a GTF or BED of genes, converted to bigBed beside the tracks


def _label(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _track_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return name if name[:1].isalpha() else f"t_{name}"


def _link_or_copy(source: Path, dest: Path) -> None:
    """Hard-link ``source`` to ``dest`` (replacing it), copying when the folders are on different
    file systems."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def _stanza(pairs: list[tuple[str, object]], indent: str = "") -> str:
    return "".join(f"{indent}{key} {value}\n" for key, value in pairs if value is not None) + "\n"


def _default_position(track: Path, chrom: str, size: int, span: int = 50_000) -> str:
    """A 50 kb view around the strongest predicted bin of the first chromosome (1-based)."""
    import pyBigWig

    with pyBigWig.open(str(track)) as bw:
        intervals = bw.intervals(chrom) or [(0, min(size, span), 0.0)]
    best = max(intervals, key=lambda item: item[2])
    start = max(0, min((best[0] + best[1]) // 2 - span // 2, size - span))
    return f"{chrom}:{start + 1}-{min(size, start + span)}"


def _view_limit(tracks: list[Path], chrom: str) -> int:
    """The 99.9th percentile of predicted values on the first chromosome over all tracks, rounded up
    to a whole number (igv.js reads viewLimits as integers)."""
    import pyBigWig

    values = []
    for path in tracks:
        with pyBigWig.open(str(path)) as bw:
            values.extend(v for _, _, v in bw.intervals(chrom) or [])
    return max(1, int(np.ceil(np.percentile(values, 99.9)))) if values else 1


def build_hub(precompute_dir: str | os.PathLike, hubdir: str | os.PathLike, options: HubOptions | None = None) -> dict:
    """Write the hub of a finished precompute folder into ``hubdir``; returns what was written."""
    from epiformer.io.manifest import read_manifest

    options = options or HubOptions()
    precompute_dir, hubdir = Path(precompute_dir), Path(hubdir)
    manifest = read_manifest(precompute_dir)
    genome = manifest["genome"]
    name = genome["name"]
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise HubError(f"genome name {name!r} in {precompute_dir}/manifest.json must be letters, digits and '_' "
                       "only, as UCSC requires (rerun precompute with --genome NAME)")
    assembly = options.assembly_hub if options.assembly_hub is not None else name not in UCSC_GENOMES
    base = options.base_url.rstrip("/") + "/" if options.base_url else ""
    fasta = Path(genome["fasta"])
    if not fasta.is_file():
        raise HubError(f"the genome FASTA the tracks were made from, {fasta}, is missing (needed for the hub's "
                       "genome files)")

    tracks = []
    for track in manifest["tracks"]:
        source = precompute_dir / track["file"]
        if not source.is_file():
            raise HubError(f"{source} (listed in {precompute_dir}/manifest.json) is missing")
        stem = Path(track["file"]).stem
        file = f"tracks/{stem}.{track['sha256'][:8]}.bw"
        _link_or_copy(source, hubdir / file)
        tracks.append({**track, "hub_file": file, "track": _track_name(f"{options.name}_{stem}")})
    derived = _derived_files(precompute_dir, hubdir, manifest)
    annotation = _annotation_file(options.annotation, hubdir, genome["chrom_sizes"])
    _remove_stale(hubdir / "tracks", {Path(t["hub_file"]).name for t in tracks + derived})

    genome_files = [f"genome/{name}{ext}" for ext in (".2bit", ".chrom.sizes", ".fa", ".fa.fai")]
    twobit, chrom_sizes, fasta_copy, fasta_index = (hubdir / relative for relative in genome_files)
    write_twobit(fasta, twobit)
    with atomic_path(chrom_sizes) as tmp:
        tmp.write_text("".join(f"{c}\t{n}\n" for c, n in genome["chrom_sizes"].items()))
    if sequence_file_kind(fasta) == "text":
        _link_or_copy(fasta, fasta_copy)
        _link_or_copy(Path(f"{fasta}.fai"), fasta_index)
    else:                                   # igv.js and IGV desktop read the plain FASTA and its .fai
        write_fasta(fasta, fasta_copy)

    first_chrom = next(iter(genome["chrom_sizes"]))
    sources = [hubdir / t["hub_file"] for t in tracks]
    position = _default_position(sources[0], first_chrom, genome["chrom_sizes"][first_chrom])
    limit = _view_limit(sources, first_chrom)
    genome_stanza = [("genome", name)]
    if assembly:
        genome_stanza += [("twoBitPath", f"{base}genome/{name}.2bit"),
                          ("chromSizes", f"{base}genome/{name}.chrom.sizes"),
                          ("organism", options.organism or name),
                          ("scientificName", options.scientific_name or name),
                          ("description", _label(f"{name} (Epiformer track hub)", LONG_LABEL)),
                          ("defaultPos", position), ("orderKey", 1)]
    method = manifest.get("interpretation", {}).get("method")
    track_db = (_track_db(tracks, options, base, limit) + _annotation_db(annotation, options, base)
                + _derived_db(derived, options, base, method))
    hub_pairs = [("hub", options.name), ("shortLabel", _label(options.short_label, SHORT_LABEL)),
                 ("longLabel", _label(options.long_label, LONG_LABEL))]
    contact = [("email", options.email), ("descriptionUrl", f"{base}description.html")]
    files = {
        "hub.txt": _stanza(hub_pairs + [("useOneFile", "on")] + contact) + _stanza(genome_stanza) + track_db,
        "hub.multi.txt": _stanza(hub_pairs + [("genomesFile", "genomes.txt")] + contact),
        "genomes.txt": _stanza(genome_stanza + [("trackDb", f"{name}/trackDb.txt")]),
        f"{name}/trackDb.txt": _track_db(tracks, options, base or "../", limit)
        + _annotation_db(annotation, options, base or "../")
        + _derived_db(derived, options, base or "../", method),
        "description.html": _description(manifest, tracks, options),
        "igv_session.json": json.dumps(_igv_js_session(name, tracks + derived, base, position, annotation),
                                       indent=1) + "\n",
        "igv_session.xml": _igv_desktop_session(name, tracks + derived, base, position, annotation),
    }
    for relative, text in files.items():
        with atomic_path(hubdir / relative) as tmp:
            tmp.write_text(text)
    # The tracks' digests come from the manifest: gigabyte bigWigs are not read again.
    digests = {t["hub_file"]: t["sha256"] for t in tracks + derived + ([annotation] if annotation else [])}
    digests.update((relative, sha256_file(hubdir / relative)) for relative in [*genome_files, *files])
    write_sha256sums(hubdir, digests)
    return {"hub": hubdir / "hub.txt", "genome": name, "assembly_hub": assembly, "default_position": position,
            "tracks": [t["hub_file"] for t in tracks + derived], "files": sorted(files),
            "annotation": annotation["hub_file"] if annotation else None}


def _annotation_file(source: str | None, hubdir: Path, chrom_sizes: dict[str, int]) -> dict | None:
    """The annotation converted to ``annotation/NAME.SHA8.bb`` (named by content), with a record
    of its source (``annotation/source.json``) for the server to know which one the hub holds."""
    folder = hubdir / "annotation"
    if source is None:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    label = Path(source).name.split(".")[0]
    stem = _track_name(label) or "annotation"
    scratch = folder / f".{stem}.new.bb"            # renamed by its content once written
    write_annotation_bigbed(source, chrom_sizes, scratch)
    digest = sha256_file(scratch)
    file = f"annotation/{stem}.{digest[:8]}.bb"
    scratch.replace(hubdir / file)
    for stale in folder.glob("*.bb"):
        if stale.name != Path(file).name:
            stale.unlink()
    with atomic_path(folder / "source.json") as tmp:
        tmp.write_text(json.dumps(annotation_source(source)) + "\n")
    return {"hub_file": file, "sha256": digest, "name": Path(source).name, "label": label}


def annotation_source(source: str | os.PathLike) -> dict:
    """What identifies an annotation file: its absolute path and checksum."""
    return {"file": str(Path(source).resolve()), "sha256": sha256_file(source)}


def _annotation_db(annotation: dict | None, options: HubOptions, base: str) -> str:
    if annotation is None:
        return ""
    return _stanza([("track", _track_name(f"{options.name}_annotation")),
                    ("shortLabel", _label(annotation["label"], SHORT_LABEL)),
                    ("longLabel", _label(f"Annotation: {annotation['name']}", LONG_LABEL)),
                    ("type", "bigBed 12"), ("bigDataUrl", f"{base}{annotation['hub_file']}"),
                    ("visibility", "pack"), ("color", "20,20,20")])


def derived_tracks(manifest: dict) -> list[dict]:
    """The tracks a manifest lists beside the predictions, each with its ``target``, ``kind``,
    ``file`` and ``sha256``: the specificity tracks (``precompute --specificity``), then the
    interpretation tracks (``epiformer interpret``)."""
    return [item for section in DERIVED_SECTIONS for item in manifest.get(section, {}).get("tracks", [])]


def derived_name(item: dict) -> str:
    """The track name of a derived track (:func:`derived_tracks`): "TARGET KIND"."""
    return f"{item['target']} {item['kind']}"


def derived_color(item: dict, target_colors: dict[str, str]) -> str:
    """A derived track's colour, "r,g,b": its base's for a substitution track, else its target's."""
    return BASE_COLORS.get(item["kind"], target_colors.get(item["target"], "90,90,90"))


def _derived_files(precompute_dir: Path, hubdir: Path, manifest: dict) -> list[dict]:
    """The derived tracks, linked into the hub like the predicted tracks, each with its target's
    colour, a name and label for igv and its autoscale group."""
    colors = {t["name"]: t["color"] for t in manifest["tracks"]}
    files = []
    for section in DERIVED_SECTIONS:
        for item in manifest.get(section, {}).get("tracks", []):
            source = precompute_dir / item["file"]
            if not source.is_file():
                raise HubError(f"{source} (listed under {section} in {precompute_dir}/manifest.json) is missing")
            file = f"tracks/{Path(item['file']).stem}.{item['sha256'][:8]}.bw"
            _link_or_copy(source, hubdir / file)
            files.append({**item, "hub_file": file, "name": derived_name(item), "color": derived_color(item, colors),
                          "autoscale": item["kind"] if item["kind"] in AUTOSCALE_GROUPS else "ism"})
    return files


def _derived_db(items: list[dict], options: HubOptions, base: str, method: str | None) -> str:
    """Composites of the derived tracks, in the cell types' subgroup: the specificity tracks (above
    the mean over cell types in the cell type's colour, below it in grey, on one scale), the
    contributions (drawn as sequence logos when zoomed in, ``logo on``) and, from mutagenesis,
    each base's substitution track in its colour."""
    if not items:
        return ""
    cells = list(dict.fromkeys(i["target"] for i in items))
    groups = " ".join(f"{_track_name(c)}={_track_name(c)}" for c in cells)
    text = ""
    for kinds, suffix, label, extra in (
            (("specificity",), "specificity", "log2(x+1) minus the mean over cell types",
             [("altColor", NEGATIVE_COLOR), ("yLineOnOff", "on"), ("yLineMark", "0")]),
            (("contrib",), "contrib", f"per-base contributions ({method})", [("logo", "on")]),
            (tuple(BASE_COLORS), "ism", "each base's substitution effect (SAD)", [])):
        chosen = [i for i in items if i["kind"] in kinds]
        if not chosen:
            continue
        composite = _track_name(f"{options.name}_{suffix}")
        dimensions = [("subGroup1", f"celltype Cell_type {groups}")]
        if suffix == "ism":
            dimensions += [("subGroup2", "base Substitution " + " ".join(f"{k[4:]}={k[4:]}" for k in kinds)),
                           ("dimensions", "dimX=celltype dimY=base")]
        else:
            dimensions += [("dimensions", "dimX=celltype")]
        text += _stanza([("track", composite), ("compositeTrack", "on"),
                         ("shortLabel", _label(f"{options.short_label} {suffix}", SHORT_LABEL)),
                         ("longLabel", _label(f"{options.short_label} {label}", LONG_LABEL)),
                         ("type", "bigWig"), *dimensions,
                         ("autoScale", "group" if suffix == "specificity" else "on"), ("maxHeightPixels", "100:40:16"),
                         ("visibility", "hide"), *extra])
        for i in chosen:
            groups_of = f"celltype={_track_name(i['target'])}" + (f" base={i['kind'][4:]}" if suffix == "ism" else "")
            text += _stanza([("track", _track_name(f"{options.name}_{i['target']}_{i['kind']}")),
                             ("parent", composite), ("subGroups", groups_of),
                             ("shortLabel", _label(i["name"], SHORT_LABEL)),
                             ("longLabel", _label(f"{i['target']} {label}", LONG_LABEL)),
                             ("type", "bigWig"), ("bigDataUrl", f"{base}{i['hub_file']}"), ("color", i["color"]),
                             *extra], indent="    ")
    return text


def _remove_stale(folder: Path, keep: set[str]) -> None:
    for path in folder.glob("*.bw"):
        if path.name not in keep:
            path.unlink()


def _track_db(tracks: list[dict], options: HubOptions, base: str, limit: int) -> str:
    composite = _track_name(options.name)
    overlay = _track_name(f"{options.name}_overlay")
    groups = " ".join(f"{_track_name(t['name'])}={_track_name(t['name'])}" for t in tracks)
    shared = [("autoScale", "group"), ("maxHeightPixels", "100:48:16"), ("viewLimits", f"0:{limit}"),
              ("windowingFunction", "mean"), ("visibility", "full")]
    text = _stanza([("track", composite), ("compositeTrack", "on"),
                    ("shortLabel", _label(options.short_label, SHORT_LABEL)),
                    ("longLabel", _label(options.long_label, LONG_LABEL)),
                    ("type", "bigWig"), ("subGroup1", f"celltype Cell_type {groups}"),
                    ("dimensions", "dimX=celltype"), ("sortOrder", "celltype=+"), *shared])
    for t in tracks:
        text += _stanza([("track", t["track"]), ("parent", f"{composite} on"),
                         ("subGroups", f"celltype={_track_name(t['name'])}"),
                         ("shortLabel", _label(t["name"], SHORT_LABEL)),
                         ("longLabel", _label(f"{t['name']} predicted accessibility: {t['description']}", LONG_LABEL)),
                         ("type", "bigWig"), ("bigDataUrl", f"{base}{t['hub_file']}"), ("color", t["color"])],
                        indent="    ")
    text += _stanza([("track", overlay), ("container", "multiWig"), ("aggregate", "transparentOverlay"),
                     ("showSubtrackColorOnUi", "on"),
                     ("shortLabel", _label(f"{options.short_label} all", SHORT_LABEL)),
                     ("longLabel", _label(f"{options.long_label}, overlaid", LONG_LABEL)),
                     ("type", "bigWig"), *shared[:4], ("visibility", "hide")])
    for t in tracks:
        text += _stanza([("track", f"{overlay}_{_track_name(t['name'])}"), ("parent", overlay),
                         ("shortLabel", _label(t["name"], SHORT_LABEL)),
                         ("longLabel", _label(f"{t['name']} predicted accessibility (overlay)", LONG_LABEL)),
                         ("type", "bigWig"), ("bigDataUrl", f"{base}{t['hub_file']}"), ("color", t["color"])],
                        indent="    ")
    return text


def _rgb(color: str) -> str:
    return f"rgb({color})"


def _igv_js_session(name: str, tracks: list[dict], base: str, position: str, annotation: dict | None) -> dict:
    genes = [{"name": annotation["name"], "type": "annotation", "format": "bigbed",
              "url": f"{base}{annotation['hub_file']}", "displayMode": "EXPANDED"}] if annotation else []
    return {
        "reference": {"id": name, "name": name, "twoBitURL": f"{base}genome/{name}.2bit",
                      "chromSizesURL": f"{base}genome/{name}.chrom.sizes"},
        "locus": position,
        "tracks": genes + [{"name": t["name"], "type": "wig", "format": "bigwig", "url": f"{base}{t['hub_file']}",
                            "color": _rgb(t["color"]), "autoscaleGroup": t.get("autoscale", "epiformer"),
                            "height": 50, **({"altColor": _rgb(NEGATIVE_COLOR)} if t.get("kind") == "specificity" else {})}
                           for t in tracks],
    }


def _igv_desktop_session(name: str, tracks: list[dict], base: str, position: str, annotation: dict | None) -> str:
    genes = base + annotation["hub_file"] if annotation else None
    resources = "".join(f"    <Resource name={quoteattr(t['name'])} path={quoteattr(base + t['hub_file'])} "
                        "type=\"bigwig\"/>\n" for t in tracks)
    if genes:
        resources = f"    <Resource name={quoteattr(annotation['name'])} path={quoteattr(genes)} type=\"bigbed\"/>\n" \
            + resources
    panel = "".join(f"    <Track attributeKey={quoteattr(t['name'])} autoScale=\"true\" "
                    f"autoscaleGroup={quoteattr(AUTOSCALE_GROUPS[t.get('autoscale', 'epiformer')])} "
                    f"clazz=\"org.broad.igv.track.DataSourceTrack\" color={quoteattr(t['color'])} "
                    f"fontSize=\"10\" id={quoteattr(base + t['hub_file'])} name={quoteattr(t['name'])} "
                    "renderer=\"BAR_CHART\" visible=\"true\" windowFunction=\"mean\"/>\n" for t in tracks)
    features = (f"  <Panel name=\"FeaturePanel\">\n    <Track attributeKey={quoteattr(annotation['name'])} "
                f"clazz=\"org.broad.igv.track.FeatureTrack\" displayMode=\"EXPANDED\" id={quoteattr(genes)} "
                f"name={quoteattr(annotation['name'])} visible=\"true\"/>\n  </Panel>\n") if genes else ""
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n"
            f"<Session genome={quoteattr(base + f'genome/{name}.fa')} hasGeneTrack=\"false\" "
            f"hasSequenceTrack=\"true\" locus={quoteattr(position)} version=\"8\">\n"
            f"  <Resources>\n{resources}  </Resources>\n{features}"
            f"  <Panel height=\"{60 * len(tracks)}\" name=\"DataPanel\" width=\"1200\">\n{panel}  </Panel>\n"
            "</Session>\n")


def _description(manifest: dict, tracks: list[dict], options: HubOptions) -> str:
    params = manifest["params"]
    rows = "".join(f"<tr><td style=\"color: rgb({t['color']})\">&#9632;</td><td>{html.escape(t['name'])}</td>"
                   f"<td>{html.escape(t['description'])}</td></tr>\n" for t in tracks)
    models = "".join(f"<li>{html.escape(m['file'])} ({html.escape(m['format'])}; targets "
                     f"{html.escape(', '.join(m['targets']))}; SHA-256 <code>{m['sha256'][:16]}</code>)</li>\n"
                     for m in manifest["models"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(options.long_label)}</title></head>
<body>
<h2>{html.escape(options.long_label)}</h2>
<p>Chromatin accessibility predicted by Epiformer from DNA sequence (one-hot, scaled by conservation)
in {params['seq_len']:,} bp windows whose central {params['output_bins'] * params['bin_size']:,} bp outputs
abut, at {params['bin_size']} bp resolution, on genome <b>{html.escape(manifest['genome']['name'])}</b>.
Reverse-complement ensembling {'on' if params['reverse_complement'] else 'off'};
bins in N gaps or the blacklist have no value.</p>
<h3>Tracks</h3>
<table>
{rows}</table>
<h3>Models</h3>
<ul>
{models}</ul>
<p>Made {html.escape(manifest['created'])} by epiformer {html.escape(manifest['code_version'])}.</p>
</body></html>
"""

