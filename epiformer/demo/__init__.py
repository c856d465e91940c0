"""The offline demo: a synthetic genome driven by real motifs, the run of every stage on it, and how
well variant scores find its planted variants."""
