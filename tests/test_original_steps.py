"""The original README's three steps, run as written there with only the program names changed, on
its folder layout (genome/, targets/, datasets/, model/, pred/), ending with a published-style
single-output checkpoint of the paper configuration predicting around BIN1 (chr2:127,068,747-127,150,006)."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyBigWig
import pytest
import yaml

from .helpers import PAPER_CHECKPOINT_NAME, write_fasta

pytestmark = pytest.mark.slow

CELL_TYPES = ["HIP", "ASCT", "OPC", "OGC", "MGC", "VIP", "ITL23", "ET"]
OFFSET = 1291 * 98_304      # where the synthetic chr2 starts, so BIN1's region lies in it

# The original README's steps 1 to 3, verbatim.
ORIGINAL_STEPS = r"""
python bin/generate_datasets.py \
       --target targets/human.targets.txt \
       --seqcons genome/human.phastCons.bw \
       --fa genome/human.fa \
       --gsize genome/human.chrom.sizes.lite \
       --blacklist genome/human.blacklist.bed.gz \
       --seqlen 98304 \
       --nchunk 5000 \
       --binsize 128 \
       -o datasets/human.mean100kSeg128.multitype.phastCons

celltype_list=("HIP" "ASCT" "OPC" "OGC" "MGC" "VIP" "ITL23" "ET")
i=4
typename=${celltype_list[${i}]}

path2dataset=datasets/
outprfx=model/${typename}

CUDA_VISIBLE_DEVICES=0,1,2,3 python bin/train_signals.py \
                                    -i  $path2dataset \
                                    --index ${i} \
                                    -o $outprfx &> $outprfx.train.log

celltype_list=("HIP" "ASCT" "OPC" "OGC" "MGC" "VIP" "ITL23" "ET")
i=4
typename=${celltype_list[${i}]}

seq_len=98304
bin_size=128
cell_index=${i} # MGC
species="human"
region="chr2:127068747-127150006" # centered at TSS of gene ***BIN1***

path2model=model/MGC.model-1663637197.best_loss.pth.tar
path2pred=pred/MGC

python epiformer/pred_signals.py -m $path2model \
                                 -s $species -r $region \
                                 -d ./ --index $cell_index --seqlen $seq_len --binsize ${bin_size} \
                                 -o $path2pred.${species} &> $path2pred.${species}.pred_signals.log
"""
PROGRAMS = {"python bin/generate_datasets.py": "epiformer generate-datasets",
            "python bin/train_signals.py": "epiformer train",
            "python epiformer/pred_signals.py": "epiformer pred-signals"}


def shifted_bigwig(source: Path, dest: Path, sizes: dict[str, int], offsets: dict[str, int]) -> None:
    """``source``'s intervals moved by each chromosome's offset, under the new chromosome sizes."""
    with pyBigWig.open(str(source)) as bw_in, pyBigWig.open(str(dest), "w") as bw_out:
        bw_out.addHeader(list(sizes.items()))
        for chrom in sizes:
            intervals = bw_in.intervals(chrom) or []
            if intervals:
                bw_out.addEntries([chrom] * len(intervals), [s + offsets[chrom] for s, _, _ in intervals],
                                  ends=[e + offsets[chrom] for _, e, _ in intervals],
                                  values=[float(v) for _, _, v in intervals])


def shifted_bed(source: Path, offsets: dict[str, int]) -> str:
    rows = [line.split("\t") for line in source.read_text().splitlines() if line.strip()]
    return "".join(f"{c}\t{int(s) + offsets[c]}\t{int(e) + offsets[c]}\n" for c, s, e, *_ in rows)


@pytest.fixture(scope="module")
def seed_folder(tmp_path_factory, paper_checkpoint) -> Path:
    """The original's layout: a synthetic genome whose chr2 reaches past BIN1 (its first 127 Mb
    N, then the demo generator's sequence), chr8 and chr9 (the default test and validation
    chromosomes) one window each; conservation, eight cell types' tracks and peaks, a gzipped
    blacklist, and the published-style checkpoint in model/."""
    from epiformer.demo.synthetic_genome import DemoSpec, make_demo_data
    from epiformer.genome.reader import Genome

    demo = tmp_path_factory.mktemp("seed_demo")
    make_demo_data(demo, DemoSpec(seed=5, chrom_sizes={"chr2": 400_000, "chr8": 110_000, "chr9": 110_000}))
    root = tmp_path_factory.mktemp("seed")
    for sub in ("genome", "targets", "datasets", "model", "pred"):
        (root / sub).mkdir()
    offsets = {"chr2": OFFSET, "chr8": 0, "chr9": 0}
    rng = np.random.default_rng(5)
    records = {}
    with Genome(demo / "genome.fa") as genome:
        for chrom, offset in offsets.items():
            seq = np.frombuffer(genome.sequence(chrom, 0, genome.chrom_sizes[chrom]).encode(), "S1").copy()
            gaps = seq == b"N"          # the demo's assembly gaps get bases: every window is kept
            seq[gaps] = rng.choice(np.array([b"A", b"C", b"G", b"T"]), int(gaps.sum()))
            records[chrom] = "N" * offset + seq.tobytes().decode()
    write_fasta(root / "genome" / "human.fa", records)
    sizes = {chrom: len(seq) for chrom, seq in records.items()}
    (root / "genome" / "human.chrom.sizes.lite").write_text("".join(f"{c}\t{n}\n" for c, n in sizes.items()))
    shifted_bigwig(demo / "conservation.bw", root / "genome" / "human.phastCons.bw", sizes, offsets)
    with gzip.open(root / "genome" / "human.blacklist.bed.gz", "wt") as handle:     # chr8's and chr9's one window stays
        handle.write("".join(line for line in shifted_bed(demo / "blacklist.bed", offsets).splitlines(True)
                             if line.startswith("chr2\t")))
    lines = ["index\tidentifier\tfile\tclip\tsum_stat\tdescription\tpeak"]
    for i, name in enumerate(CELL_TYPES):
        shifted_bigwig(demo / f"{name}.bw", root / "targets" / f"human.{name}.norm_cov.bw", sizes, offsets)
        (root / "targets" / f"human.{name}.bed").write_text(shifted_bed(demo / f"{name}.peaks.bed", offsets))
        lines.append(f"{i}\t{name}\ttargets/human.{name}.norm_cov.bw\t128\tmean\t{name}\ttargets/human.{name}.bed")
    (root / "targets" / "human.targets.txt").write_text("\n".join(lines) + "\n")
    (root / "model" / PAPER_CHECKPOINT_NAME).symlink_to(paper_checkpoint)
    # The original's Step 2 reads its hyperparameters from the script, edited by hand; here they are
    # a file named by EPIFORMER_TRAIN_CONFIG: the paper's windows with one transformer layer, one epoch.
    (root / "train.yaml").write_text(yaml.safe_dump({
        "preset": "paper", "num_encoder_layers": 1, "dim_feedforward": 256, "num_epoches": 1, "batch_size": 2,
        "num_workers": 0, "bf16": False}))
    return root


def test_the_original_readme_steps_run_with_only_the_program_names_changed(seed_folder):
    script = ORIGINAL_STEPS
    for original, ours in PROGRAMS.items():
        assert original in script
        script = script.replace(original, ours)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "EPIFORMER_TRAIN_CONFIG": str(seed_folder / "train.yaml")}
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=seed_folder, env=env,
                         capture_output=True, text=True, timeout=900)
    logs = {p.name: p.read_text()[-3000:] for p in [*seed_folder.glob("model/*.log"), *seed_folder.glob("pred/*.log")]}
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:], logs)

    # Step 1: the original's shards, split by chromosome
    assert sorted(p.name for p in (seed_folder / "datasets").glob("*.h5"))
    # Step 2: one target (MGC) trained, its three checkpoints and the log
    for kind in ("last", "best_loss", "best_corr"):
        assert (seed_folder / "model" / f"MGC.{kind}.pth.tar").is_file()
    assert "MGC" in (seed_folder / "model" / "MGC.train.log").read_text()
    # Step 3: what the original writes, and the project's bigWig
    prefix = seed_folder / "pred" / "MGC.human.human.chr2:127068747-127150006"
    predicted = np.loadtxt(f"{prefix}.pred_signals.tsv", ndmin=2)
    observed = np.loadtxt(f"{prefix}.true_signals.tsv", ndmin=2)
    assert predicted.shape == observed.shape == (1, 640)
    assert np.all(np.isfinite(predicted)) and np.all(predicted > 0)
    for plot in ("pred_rawsignals", "pred_log2signals"):
        assert Path(f"{prefix}.{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pyBigWig.open(f"{prefix}.MGC.bw") as bw:
        intervals = bw.intervals("chr2")
    assert len(intervals) == 640
    start, end = intervals[0][0], intervals[-1][1]
    assert start <= 127_068_746 and end >= 127_150_006       # one window's output, centred on the region
    assert abs((start + end) // 2 - (127_068_746 + 127_150_006) // 2) <= 128
    np.testing.assert_allclose(predicted[0], [v for _, _, v in intervals], rtol=1e-6)
    with pyBigWig.open(str(seed_folder / "targets" / "human.MGC.norm_cov.bw")) as bw:
        raw = np.nan_to_num(bw.values("chr2", start, end, numpy=True))
    np.testing.assert_allclose(observed[0], np.clip(raw.reshape(640, 128).mean(axis=1), 0, 128), rtol=1e-5)
    assert "Model_Corr" in (seed_folder / "pred" / "MGC.human.pred_signals.log").read_text()
