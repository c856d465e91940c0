"""Epiformer track server: model library, precompute jobs, track hub and web server."""
import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
STAGES = ("server", "precompute", "trackhub", "static")
version = re.search(r'__version__ = "([^"]+)"', (here / "epiformer" / "__init__.py").read_text()).group(1)

setup(
    name="epiformer",
    version=version,
    description="Chromatin accessibility per cell type from DNA: model, genome-wide tracks, track hub and server",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Everything installs under the one name epiformer: the library, and the stages whose folders
    # sit at the repository's top level (server/, precompute/, trackhub/, and the page in static/).
    packages=find_packages(include=["epiformer", "epiformer.*"]) + [f"epiformer.{name}" for name in STAGES],
    package_dir={f"epiformer.{name}": name for name in STAGES},
    # The page (with igv.js when make install has fetched it) and the JASPAR matrices demo-data plants.
    package_data={"epiformer.static": ["*", "vendor/*"], "epiformer.demo": ["data/*"]},
    install_requires=[
        "torch>=2.4,<3",
        "numpy>=1.24",
        "pysam>=0.22",       # FASTA, plain or bgzip-compressed (htslib), and its .fai/.gzi index
        "py2bit>=0.3",       # UCSC .2bit genomes
        "pyBigWig>=0.3.22",
        "pybigtools>=0.3",   # bigBed writing (the hub's gene annotation)
        "pybedtools>=0.9",
        "h5py>=3.8",
        "hdf5plugin>=4.0",   # the LZ4 filter of the original's datasets
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "pyyaml>=6",
        "flask>=3.0",
        # server/buffering.py subclasses gthread's ThreadWorker and TConn and uses its internals
        # (poller, enqueue_req, keepalived_conns, murder_pending, data_ready, _keepalive_after,
        # Request._expected_100_continue), parses with gunicorn.http's Request and chunk grammar
        # (CHUNK_EXT_RE): 27.0.1 is the version tested.
        "gunicorn>=27.0.1,<28",
    ],
    extras_require={
        "test": ["pytest>=7.4", "pybbi>=0.4", "selenium>=4.20", "hypothesis>=6.100",
                 "schemathesis>=4.0",
                 "setuptools>=70.1"],   # tests/test_packaging.py builds the wheel without build isolation
    },
    entry_points={"console_scripts": ["epiformer=epiformer.cli:main"]},
)
