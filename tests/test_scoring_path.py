"""The scoring path reads top to bottom: from ``score-variants`` and POST /api/variants to the
model's forward pass, each call goes to a module not yet on the way (nothing calls back up)."""
from __future__ import annotations

import threading
import traceback
from pathlib import Path

import pytest
from torch import nn

from epiformer.cli import main
from epiformer.genome.reader import Genome
from epiformer.server.batching import BatchPredictor

from .helpers import make_model_app

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = [ROOT / folder for folder in ("epiformer", "server", "precompute", "trackhub")]


def product_modules(stack: traceback.StackSummary) -> list[str]:
    """The product's modules on a stack, outermost first, a run of frames in one module once."""
    modules: list[str] = []
    for frame in stack:
        path = Path(frame.filename).resolve()
        if any(path.is_relative_to(folder) for folder in PRODUCT):
            name = path.relative_to(ROOT).as_posix()
            if not modules or modules[-1] != name:
                modules.append(name)
    return modules


def snv(demo_data: Path, pos: int) -> tuple[str, str]:
    """The demo genome's base at chr1:pos (1-based) and another base."""
    with Genome(demo_data / "genome.fa") as genome:
        ref = genome.sequence("chr1", pos - 1, pos).upper()
    return ref, "C" if ref != "C" else "G"


def revisited(modules: list[str]) -> list[str]:
    """Modules a path returns to after leaving them."""
    return sorted({name for name in modules if modules.count(name) > 1})


@pytest.fixture
def forward_stacks():
    """Each thread's product modules at its first call of a torch module (the tower, or the whole model)."""
    stacks: dict[str, list[str]] = {}

    def record(_module: nn.Module, _inputs: tuple) -> None:
        stacks.setdefault(threading.current_thread().name, product_modules(traceback.extract_stack()))

    handle = nn.modules.module.register_module_forward_pre_hook(record)
    yield stacks
    handle.remove()


def test_score_variants_goes_down_to_the_forward_pass(precomputed, demo_data, tmp_path, forward_stacks):
    ref, alt = snv(demo_data, 200_001)
    vcf = tmp_path / "one.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   f"chr1\t200001\trs1\t{ref}\t{alt}\t.\t.\t.\n")
    assert main(["score-variants", "-m", str(precomputed.parent / "model.pth.tar"), "--fa", str(demo_data / "genome.fa"),
                 "--seqcons", str(demo_data / "conservation.bw"), "--vcf", str(vcf), "-o", str(tmp_path / "out"),
                 "--device", "cpu", "-q"]) == 0
    path = forward_stacks[threading.current_thread().name]
    assert path == ["epiformer/cli/__init__.py", "epiformer/cli/variant_commands.py", "epiformer/variants/score_job.py",
                    "epiformer/variants/scorer.py", "epiformer/inference/runners.py",
                    "epiformer/inference/incremental.py"]


def test_api_variants_goes_down_to_the_forward_pass(precomputed, tmp_path, demo_data, forward_stacks, monkeypatch):
    """The request's thread runs down to the batcher; the batcher's thread runs on to the model."""
    request_paths: list[list[str]] = []
    submit = BatchPredictor._submit

    def recorded(self, job):
        request_paths.append(product_modules(traceback.extract_stack()))
        return submit(self, job)

    monkeypatch.setattr(BatchPredictor, "_submit", recorded)
    app = make_model_app(precomputed, tmp_path / "hub")
    ref, alt = snv(demo_data, 230_001)
    try:
        response = app.test_client().post("/api/variants", json={"variants": [f"chr1:230001:{ref}:{alt}"]})
        assert response.status_code == 200, response.json
    finally:
        app.config["PREDICTOR"].close()
    request = request_paths[0]
    assert request == ["server/prediction_api.py", "server/on_demand.py", "epiformer/variants/scorer.py",
                       "server/batching.py"]
    batch = forward_stacks["batch-predictor"]
    assert batch == ["server/batching.py", "epiformer/inference/incremental.py"]
    assert revisited(request + batch[1:]) == []
