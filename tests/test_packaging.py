"""The wheel works outside the source tree: it carries the page and the demo's JASPAR matrices,
installs everything under the one name ``epiformer`` and lives beside PyPI's ``trackhub``.

The project's wheel is built from a copy of its sources (so no build/ or egg-info is written into
the checkout and no stale build/lib leaks into the wheel) and installed with --no-deps into a
fresh venv. That venv sees the project's dependencies through a .pth line naming this
interpreter's site-packages; a folder added that way is not a site dir, so the editable install's
.pth files there do not run, and ``import epiformer`` finds the installed copy only. Everything
then runs from the venv's ``epiformer`` script and python, in a folder outside the source tree.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from epiformer import save_checkpoint
from epiformer.demo.synthetic_genome import CELL_TYPES
from epiformer.model.config import preset
from epiformer.model.network import Epiformer
from epiformer.server import STATIC_DIR

ROOT = Path(__file__).resolve().parent.parent
IGV_JS = STATIC_DIR / "vendor" / "igv.min.js"   # in the sources the wheel is built from
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                     "test-artifacts", "demo_out", "tests", "bench", "docs")

pytestmark = pytest.mark.slow

SERVE_PAGE = """
import json, os, subprocess
import epiformer
from epiformer import server
from epiformer.server import GUNICORN_CONF, create_app, gunicorn_command

app = create_app({"precompute_dir": "pre", "log_requests": False})
client = app.test_client()
status = {path: client.get(path).status_code for path in ("/", "/static/app.js", "/static/style.css",
                                                        "/static/vendor/igv.min.js")}
gunicorn = subprocess.run(gunicorn_command() + ["--check-config"], capture_output=True, text=True,
                          env={**os.environ, "EPIFORMER_PRECOMPUTE_DIR": "pre"})
print(json.dumps({"epiformer": epiformer.__file__, "server": server.__file__, "gunicorn_conf": str(GUNICORN_CONF),
                  "gunicorn_check": [gunicorn.returncode, gunicorn.stdout + gunicorn.stderr], "status": status,
                  "index": client.get("/").get_data(as_text=True)}))
"""


PYPI_TRACKHUB = "1.0"
FIND_TRACKHUBS = """
import importlib.util, json
print(json.dumps({name: importlib.util.find_spec(name).origin for name in ("trackhub", "epiformer.trackhub")}))
"""


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def test_wheel_serves_the_page_and_makes_the_demo_outside_the_source_tree(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    source, wheels, venv, work = (tmp_path / name for name in ("src", "wheels", "venv", "work"))
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    work.mkdir()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "--disable-pip-version-check", "-w", str(wheels), str(source)], tmp_path, env)
    wheel, = wheels.glob("epiformer-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
        assert "epiformer/static/index.html" in archive.namelist()
    assert top == {"epiformer", wheel.name.split("-py")[0] + ".dist-info"}, top

    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    venv_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          tmp_path, env).strip())
    (venv_site / "project-dependencies.pth").write_text("".join(f"{path}\n" for path in site.getsitepackages()))
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q",
          "--disable-pip-version-check", str(wheel)], tmp_path, env)
    # PyPI's trackhub (UCSC track hubs from Python), as users may have it beside this package
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--ignore-installed", "-q",
          "--disable-pip-version-check", f"trackhub=={PYPI_TRACKHUB}"], tmp_path, env)
    found = json.loads(_run([str(python), "-c", FIND_TRACKHUBS], work, env))
    assert Path(found["trackhub"]).resolve().parent.name == "trackhub", found
    assert Path(found["epiformer.trackhub"]).resolve().parent.parent.name == "epiformer", found

    epiformer = str(venv / "bin" / "epiformer")
    _run([epiformer, "demo-data", "-o", "data", "--size-mb", "0.3", "--chroms", "2"], work, env)
    torch.manual_seed(0)
    save_checkpoint(work / "model.pth.tar", Epiformer(preset("tiny"), list(CELL_TYPES)).eval())
    _run([epiformer, "precompute", "-m", "model.pth.tar", "--fa", "data/genome.fa", "--seqcons",
          "data/conservation.bw", "-o", "pre", "-q"], work, env)
    served = json.loads(_run([str(python), "-c", SERVE_PAGE], work, env))

    for module in ("epiformer", "server", "gunicorn_conf"):
        assert Path(served[module]).resolve().is_relative_to(venv_site.resolve()), (module, served[module])
    assert served["gunicorn_check"][0] == 0, served["gunicorn_check"][1][-3000:]   # its config and the app load
    assert served["status"]["/"] == 200 and "/static/app.js" in served["index"]
    assert served["status"]["/static/app.js"] == 200 and served["status"]["/static/style.css"] == 200
    if not IGV_JS.is_file():
        pytest.skip(f"{IGV_JS} was absent at build time (make install fetches it), so the wheel has no igv.js; "
                    "everything else passed")
    assert served["status"]["/static/vendor/igv.min.js"] == 200
