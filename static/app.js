// The page: an igv.js browser over the server's own genome and predicted tracks.
// Everything it loads comes from this server (the genome, the tracks, igv.js itself).
"use strict";

const state = { browser: null, tracks: null };

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
    reference: doc.igv_js.reference,
    locus: locus,
    tracks: doc.tracks.map((t) => ({
      name: t.name, type: "wig", format: "bigwig", url: t.url, color: rgb(t.color),
      autoscaleGroup: "predicted", height: 50,
    })),
  };
  state.browser = await igv.createBrowser(document.getElementById("igv"), options);
  window.epiformerBrowser = state.browser;
  state.browser.on("locuschange", rememberLocus);
  document.getElementById("locus").value = locus;
}

// The view lives in the URL, so a link reproduces it.
function rememberLocus() {
  const loci = state.browser.currentLoci();
  const current = Array.isArray(loci) ? loci.join(" ") : String(loci);
  const url = new URL(window.location.href);
  url.searchParams.set("locus", current);
  window.history.replaceState(null, "", url);
  document.getElementById("locus").value = current;
}

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
