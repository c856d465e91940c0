// The page: an igv.js browser over the server's own genome and predicted tracks.
// Everything it loads comes from this server (the genome, the tracks, igv.js itself).
"use strict";

const state = { browser: null, tracks: null, variants: [], cells: [] };

function showError(id, message) {
  document.getElementById(id).textContent = message;
}

async function fetchJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error || {};
    const problems = (error.problems || []).map((p) => p.message).join("; ");
    throw new Error((error.message || `${response.status} ${response.statusText}`) + (problems ? `: ${problems}` : ""));
  }
  return body;
}

function link(text, href, title) {
  const a = document.createElement("a");
  a.textContent = text;
  a.href = href;
  if (title) a.title = title;
  return a;
}

function rgb(color) {
  return `rgb(${color})`;
}

async function start() {
  if (typeof igv === "undefined") {
    showError("page-error", "igv.js is not installed on this server: run `make install` in the project folder.");
    return;
  }
  let doc;
  try {
    doc = await fetchJSON("/api/tracks");
  } catch (err) {
    showError("page-error", `The track list could not be loaded: ${err.message}`);
    return;
  }
  state.tracks = doc;
  const params = new URLSearchParams(window.location.search);
  const locus = params.get("locus") || doc.default_locus;
  document.getElementById("summary").textContent =
    `Genome ${doc.genome.name}: ${doc.tracks.length} predicted tracks at ${doc.bin_size} bp.`;
  const nav = document.getElementById("links");
  nav.append(
    link("Open in UCSC", doc.links.ucsc, "UCSC Genome Browser with this server's track hub"),
    link("Open in IGV desktop", doc.links.igv_desktop, "needs IGV running with its batch port on"),
    link("IGV session", doc.links.igv_desktop_session),
    link("Track hub", doc.hub),
    link("API", "/api/openapi.json"),
  );
  const options = {
    loadDefaultGenomes: false,
    search: false,               // igv.js would otherwise ask igv.org for names it does not know
    reference: doc.igv_js.reference,
    locus: locus,
    tracks: [
      ...(doc.annotation ? [{ name: doc.annotation.name, type: "annotation", format: "bigbed",
        url: doc.annotation.url, displayMode: "EXPANDED", height: 60 }] : []),
      ...doc.tracks.map((t) => ({
        name: t.name, type: "wig", format: "bigwig", url: t.url, color: rgb(t.color),
        autoscaleGroup: "predicted", height: 50,
      })),
    ],
  };
  state.browser = await igv.createBrowser(document.getElementById("igv"), options);
  window.epiformerBrowser = state.browser;
  state.browser.on("locuschange", rememberLocus);
  state.browser.on("trackclick", (track, data, genomicLocation) => { fillVariantAt(genomicLocation); });
  document.getElementById("locus").value = locus;
  const select = document.getElementById("variant-cells");
  for (const t of doc.tracks) select.append(new Option(t.name, t.name));
  state.cells = (params.get("tracks") || doc.tracks[0].name).split(",").filter(Boolean);
  // The contribution tracks (epiformer interpret) of the chosen cell types, under the predictions.
  for (const t of (doc.interpretation || []).filter((x) => x.kind === "contrib" && state.cells.includes(x.target))) {
    await state.browser.loadTrack({ name: t.name, type: "wig", format: "bigwig", url: t.url, color: rgb(t.color),
      autoscaleGroup: "contrib", height: 40 });
  }
  for (const option of select.options) option.selected = state.cells.includes(option.value);
  if ((doc.specificity || []).length) {
    document.getElementById("specificity-toggle").hidden = false;
    document.getElementById("show-specificity").checked = params.get("specificity") === "1";
    await showSpecificity(params.get("specificity") === "1");
  }
  for (const variant of (params.get("variants") || "").split(",").filter(Boolean)) await scoreVariant(variant);
}

// Each cell type's specificity track (precompute --specificity) on one scale, above its predicted tracks' mean
// in the cell type's colour and below it in grey; the checkbox shows or hides them all.
async function showSpecificity(show) {
  for (const track of state.browser.findTracks((t) => t.name && t.name.endsWith(" specificity"))) {
    state.browser.removeTrack(track);
  }
  if (show) {
    for (const t of state.tracks.specificity || []) {
      await state.browser.loadTrack({ name: t.name, type: "wig", format: "bigwig", url: t.url, color: rgb(t.color),
        altColor: "rgb(150,150,150)", autoscaleGroup: "specificity", height: 40 });
    }
  }
}

document.getElementById("show-specificity").addEventListener("change", async (event) => {
  await showSpecificity(event.target.checked);
  rememberView();
});

// The view (locus, variants, their tracks) lives in the URL, so a link reproduces it.
function rememberLocus() {
  const loci = state.browser.currentLoci();
  const current = (Array.isArray(loci) ? loci.join(" ") : String(loci))
    .replace(/\d+(\.\d+)?/g, (n) => String(Math.round(Number(n))));
  document.getElementById("locus").value = current;
  rememberView();
}

function rememberView() {
  const url = new URL(window.location.href);
  url.searchParams.set("locus", document.getElementById("locus").value);
  url.searchParams.set("variants", state.variants.map((v) => v.text).join(","));
  url.searchParams.set("tracks", state.cells.join(","));
  url.searchParams.set("specificity", document.getElementById("show-specificity").checked ? "1" : "0");
  window.history.replaceState(null, "", url);
}

async function fillVariantAt(genomicLocation) {
  const frame = state.browser.referenceFrameList[0];
  const pos = Math.floor(genomicLocation) + 1;
  try {
    const body = await fetchJSON(`/api/sequence?region=${encodeURIComponent(`${frame.chr}:${pos}-${pos}`)}`);
    const input = document.getElementById("variant");
    input.value = `${frame.chr}:${pos}:${body.sequence}:`;
    input.focus();
  } catch (err) {
    showError("variant-error", err.message);
  }
}

function variantText(v) {
  return `${v.chrom}:${v.pos}:${v.ref || "-"}:${v.alt || "-"}`;
}

async function scoreVariant(text) {
  showError("variant-error", "");
  const loading = document.getElementById("variant-loading");
  loading.hidden = false;
  try {
    const body = await fetchJSON("/api/variants", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ variants: [text.trim()] }),
    });
    const result = body.results[0];
    const name = variantText(result.variant);
    if (!state.variants.some((v) => v.text === name)) {
      state.variants.push({ text: name, result });
      renderVariant(name, result, body.targets);
      await addVariantTracks(name);
    }
    rememberView();
  } catch (err) {
    showError("variant-error", err.message);
  } finally {
    loading.hidden = true;
  }
}

function renderVariant(name, result, targets) {
  const card = document.createElement("div");
  card.className = "card";
  card.dataset.variant = name;
  const title = document.createElement("h3");
  title.textContent = name;
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Remove";
  remove.setAttribute("aria-label", `Remove ${name}`);
  remove.addEventListener("click", () => removeVariant(name));
  title.append(remove);
  const table = document.createElement("table");
  const largest = Math.max(1e-12, ...targets.map((t) => Math.abs(result.scores[t].sad)));
  table.innerHTML = "<thead><tr><th>cell type</th><th>SAD</th><th>log2FC</th><th>percentile</th><th></th></tr></thead>";
  const tbody = document.createElement("tbody");
  for (const t of targets) {
    const s = result.scores[t];
    const row = document.createElement("tr");
    const pct = s.percentiles ? s.percentiles.sad.toFixed(1) : "–";
    const width = Math.round(80 * Math.abs(s.sad) / largest);
    row.innerHTML = `<td></td><td>${s.sad.toPrecision(3)}</td><td>${s.log2fc.toPrecision(3)}</td><td>${pct}</td>` +
      `<td><span class="bar ${s.sad >= 0 ? "up" : "down"}" style="width:${width}px"></span></td>`;
    row.firstChild.textContent = t;
    tbody.append(row);
  }
  table.append(tbody);
  card.append(title, table);
  document.getElementById("variant-results").append(card);
}

function cellColor(cell) {
  const track = state.tracks.tracks.find((t) => t.name === cell);
  return track ? rgb(track.color) : "rgb(80,80,80)";
}

function variantTrackURL(name, cell, kind) {
  return `/api/variant-track?variant=${encodeURIComponent(name)}&target=${encodeURIComponent(cell)}&kind=${kind}`;
}

// Per cell type: the reference (grey) and alternate (the cell type's colour) predictions overlaid in
// one igv.js merged track, and their difference beneath it.
async function addVariantTracks(name) {
  for (const cell of state.cells) {
    await state.browser.loadTrack({
      name: `${cell} ref/alt ${name}`, type: "merged", height: 50, alpha: 0.6,
      tracks: [
        { name: `${cell} ref`, type: "wig", format: "bedgraph", color: "rgb(150,150,150)",
          url: variantTrackURL(name, cell, "ref") },
        { name: `${cell} alt`, type: "wig", format: "bedgraph", color: cellColor(cell),
          url: variantTrackURL(name, cell, "alt") },
      ],
    });
    await state.browser.loadTrack({
      name: `${cell} diff ${name}`, type: "wig", format: "bedgraph", height: 40, color: "rgb(90,90,90)",
      url: variantTrackURL(name, cell, "diff"),
    });
  }
}

function removeVariant(name) {
  state.variants = state.variants.filter((v) => v.text !== name);
  document.querySelector(`.card[data-variant="${CSS.escape(name)}"]`)?.remove();
  for (const track of state.browser.findTracks((t) => t.name && t.name.endsWith(` ${name}`))) {
    state.browser.removeTrack(track);
  }
  rememberView();
}

document.getElementById("variant-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const select = document.getElementById("variant-cells");
  state.cells = Array.from(select.selectedOptions).map((o) => o.value);
  const text = document.getElementById("variant").value;
  if (!text.trim()) {
    showError("variant-error", "Type a variant first, e.g. chr1:150001:C:A.");
    return;
  }
  await scoreVariant(text);
});

function bedGraphURL(chrom, start, binSize, values, label) {
  const lines = [`track type=bedGraph name="${label}"`];
  values.forEach((v, k) => {
    const lo = start + k * binSize;
    if (lo >= 0) lines.push(`${chrom}\t${lo}\t${lo + binSize}\t${v}`);
  });
  return URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/plain" }));
}

// A small drawing of a predicted track (one bin per 3 px), scaled to ``top``.
function sparkline(values, top, color) {
  const width = 3 * values.length, height = 24;
  const points = values.map((v, k) => `${3 * k + 1.5},${(height - 1 - (height - 2) * v / top).toFixed(1)}`).join(" ");
  return `<svg width="${width}" height="${height}" role="img" aria-label="predicted track">` +
    `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${points}"/></svg>`;
}

function parseEdits(text) {
  return text.split("\n").map((line) => line.trim()).filter(Boolean).map((line) => {
    const [pos, ref, alt] = line.split(":");
    return { pos: Number(pos.replace(/,/g, "")), ref: ref === "-" ? "" : ref, alt: alt === "-" ? "" : alt };
  });
}

document.getElementById("edit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("edit-error", "");
  const loading = document.getElementById("edit-loading");
  const region = document.getElementById("edit-region").value.trim();
  const sequence = document.getElementById("edit-sequence").value.replace(/\s+/g, "");
  const request = sequence ? { sequence } : { region, edits: parseEdits(document.getElementById("edit-list").value) };
  if (!sequence && !region) {
    showError("edit-error", "Give a region (with edits) or paste a sequence.");
    return;
  }
  loading.hidden = false;
  try {
    const body = await fetchJSON("/api/predict", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request),
    });
    await showPrediction(body, sequence ? `Pasted sequence (${sequence.length} bp)` : region);
  } catch (err) {
    showError("edit-error", err.message);
  } finally {
    loading.hidden = true;
  }
});

async function showPrediction(body, label) {
  const results = document.getElementById("edit-results");
  if (body.chrom === null) {
    const table = document.createElement("table");
    table.innerHTML = "<thead><tr><th>cell type</th><th>mean</th><th>max</th><th>predicted track</th></tr></thead>";
    const top = Math.max(1e-9, ...body.targets.flatMap((t) => body.tracks.sequence[t]));
    for (const t of body.targets) {
      const values = body.tracks.sequence[t];
      const row = document.createElement("tr");
      row.innerHTML = `<td></td><td>${(values.reduce((a, b) => a + b, 0) / values.length).toPrecision(3)}</td>` +
        `<td>${Math.max(...values).toPrecision(3)}</td><td>${sparkline(values, top, cellColor(t))}</td>`;
      row.firstChild.textContent = t;
      table.append(row);
    }
    const card = document.createElement("div");
    card.className = "card";
    card.append(Object.assign(document.createElement("h3"), { textContent: label }), table);
    results.prepend(card);
    return;
  }
  for (const cell of state.cells.length ? state.cells : [body.targets[0]]) {
    for (const kind of ["reference", "edited"]) {
      await state.browser.loadTrack({
        name: `${cell} ${kind} ${label}`, type: "wig", format: "bedgraph", height: 40,
        color: kind === "edited" ? "rgb(90,90,90)" : cellColor(cell),
        url: bedGraphURL(body.chrom, body.start, body.bin_size, body.tracks[kind][cell], `${cell} ${kind}`),
      });
    }
  }
  await state.browser.search(`${body.chrom}:${body.start + 1}-${body.end}`);
  results.prepend(Object.assign(document.createElement("p"), {
    className: "hint", textContent: `Predicted ${label}: reference and edited tracks added to the browser.` }));
}

// Mutagenesis: /api/ism's effects drawn as one heatmap per chosen cell type (positions across, the four
// bases down); a square is the variant it stands for, scored in the variant panel when clicked.
const ISM_VIEW_BP = 100;

function heatColor(value, top) {
  if (value === null) return "rgb(235,235,235)";
  const share = Math.min(1, Math.abs(value) / top);
  const fade = Math.round(255 * (1 - share));
  return value < 0 ? `rgb(${fade},${fade},255)` : `rgb(255,${fade},${fade})`;
}

function renderMutagenesis(body) {
  const { chrom, start } = body.region;
  const card = document.createElement("div");
  card.className = "card ism";
  card.dataset.region = `${chrom}:${start}-${body.region.end}`;
  card.append(Object.assign(document.createElement("h3"), {
    textContent: `${chrom}:${start.toLocaleString()}-${body.region.end.toLocaleString()}, SAD within ` +
      `${body.score_bp} bp` }));
  for (const target of body.targets) {
    const effects = body.effects[target];
    const top = Math.max(1e-12, ...effects.flat().filter((v) => v !== null).map(Math.abs));
    const table = document.createElement("table");
    table.className = "heatmap";
    table.dataset.target = target;
    table.createCaption().textContent = `${target} (largest |SAD| ${top.toPrecision(3)})`;
    body.bases.forEach((base, b) => {
      const row = table.insertRow();
      row.insertCell().textContent = base;
      effects.forEach((values, k) => {
        const cell = row.insertCell();
        const ref = body.reference[k];
        cell.style.background = heatColor(values[b], top);
        if (values[b] === null || base === ref) return;
        cell.dataset.variant = `${chrom}:${start + k}:${ref}:${base}`;
        cell.title = `${cell.dataset.variant}: SAD ${values[b].toPrecision(3)}`;
        cell.addEventListener("click", () => {
          state.cells = [...body.targets];           // its tracks for the heatmaps' cell types
          scoreVariant(cell.dataset.variant);
        });
      });
    });
    card.append(table);
  }
  document.getElementById("ism-results").prepend(card);
}

document.getElementById("ism-view").addEventListener("click", () => {
  const frame = state.browser.referenceFrameList[0];
  const centre = Math.round((frame.start + frame.end) / 2);
  const lo = Math.max(1, centre - ISM_VIEW_BP / 2 + 1);
  document.getElementById("ism-region").value = `${frame.chr}:${lo}-${lo + ISM_VIEW_BP - 1}`;
});

document.getElementById("ism-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("ism-error", "");
  const region = document.getElementById("ism-region").value.trim();
  if (!region) {
    showError("ism-error", "Give a region of at most 1 kb, or use the view's centre.");
    return;
  }
  const select = document.getElementById("variant-cells");
  const targets = Array.from(select.selectedOptions).map((o) => o.value);
  const loading = document.getElementById("ism-loading");
  loading.hidden = false;
  try {
    const body = await fetchJSON("/api/ism", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ region, targets: targets.length ? targets : state.cells }),
    });
    renderMutagenesis(body);
  } catch (err) {
    showError("ism-error", err.message);
  } finally {
    loading.hidden = true;
  }
});

document.getElementById("locus-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("locus-error", "");
  const value = document.getElementById("locus").value.trim();
  if (!state.browser || !value) return;
  try {
    const found = await state.browser.search(value);
    if (found === false) throw new Error("no such locus");
    rememberLocus();
  } catch (err) {
    showError("locus-error", `Cannot go to ${value}: ${err.message || err}`);
  }
});

start().catch((err) => showError("page-error", `The browser could not start: ${err.message || err}`));
