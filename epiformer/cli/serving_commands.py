"""``hub`` and ``serve``: the track hub from a precompute folder, and the server."""
from __future__ import annotations

import argparse

from epiformer.cli.arguments import add_inference_arguments, add_model_set_arguments


EPILOG_HUB = """examples:
  epiformer hub demo_out/precompute -o demo_out/hub
  # files served from a CDN or object store: absolute URLs in the hub
  epiformer hub hg38_tracks -o hg38_hub --base-url https://data.example.org/epiformer/hg38_hub \\
      --email me@example.org
"""


EPILOG_SERVE = """examples:
  epiformer serve demo_out/precompute -m demo_out/runs/demo.best_corr.pth.tar
  epiformer serve hg38_tracks -m models.tsv --fa hg38.fa --seqcons hg38.phastCons100way.bw \\
      --host 0.0.0.0 --port 8000 --public-url https://tracks.example.org
  # behind nginx (deploy/nginx.conf) on the same machine
  epiformer serve hg38_tracks -m models.tsv --port 8000 --proxy-hops 1 --public-url https://tracks.example.org
  # the same in production, configured by the environment
  EPIFORMER_PRECOMPUTE_DIR=hg38_tracks EPIFORMER_MODELS=models.tsv EPIFORMER_BIND=0.0.0.0:8000 \\
      gunicorn -c server/gunicorn.conf.py 'epiformer.server:create_app()'
"""


def _hub(args: argparse.Namespace) -> None:
    from epiformer.trackhub import HubOptions, build_hub

    options = HubOptions(email=args.email, base_url=args.base_url, assembly_hub=args.assembly_hub,
                         organism=args.organism, scientific_name=args.scientific_name, annotation=args.annotation)
    if args.name:
        options.name = args.name
    result = build_hub(args.precompute_dir, args.out, options)
    kind = "assembly hub" if result["assembly_hub"] else "hub"
    print(f"wrote the {kind} for {result['genome']} with {len(result['tracks'])} tracks: {result['hub']} "
          f"(also {', '.join(f for f in result['files'] if f != 'hub.txt')})")


def _serve(args: argparse.Namespace) -> None:
    from epiformer.server.production import hub_dir, serve
    from epiformer.server.server_config import load_config

    overrides = {"precompute_dir": args.precompute_dir, "models": args.model, "fasta": args.fa,
                 "conservation": "none" if args.no_conservation else args.seqcons, "targets": args.targets,
                 "index": args.index, "average": args.average or None, "device": args.device,
                 "precision": args.precision, "reverse_complement": False if args.no_rc else None,
                 "shifts": list(args.shifts) if args.shifts else None, "bind": f"{args.host}:{args.port}",
                 "workers": args.workers, "public_url": args.public_url, "hub_dir": args.hub_dir,
                 "allowed_hosts": args.allowed_hosts, "compile": args.compile, "annotation": args.annotation,
                 "proxy_hops": args.proxy_hops}
    cfg = load_config({k: v for k, v in overrides.items() if v is not None})
    base = cfg.public_url or f"http://{args.host}:{args.port}"
    print(f"hub         {hub_dir(cfg)}/hub.txt")
    print(f"serving     {base}/  (hub {base}/hub/hub.txt, API {base}/api/openapi.json); Ctrl-C stops it")
    serve(cfg)
    print("stopped")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the ``epiformer`` parser."""
    hub = sub.add_parser(
        "hub", help="write a UCSC/IGV track hub from a precompute folder",
        description="Write hub.txt (single-file form, useOneFile on: the URL for UCSC and igv.js), the classic "
                    "hub.multi.txt + genomes.txt + GENOME/trackDb.txt, description.html, the tracks (hard links "
                    "named by content), the genome as .2bit, chrom.sizes and FASTA, and igv.js / IGV desktop "
                    "sessions. Genomes UCSC does not host get an assembly hub.",
        epilog=EPILOG_HUB, formatter_class=argparse.RawDescriptionHelpFormatter)
    hub.add_argument("precompute_dir", help="the -o folder of epiformer precompute")
    hub.add_argument("-o", "--out", required=True, metavar="HUBDIR", help="output folder")
    hub.add_argument("--base-url", help="absolute URL HUBDIR will be served from (default: relative URLs)")
    hub.add_argument("--email", default="epiformer-hub@example.org", help="contact shown by UCSC")
    hub.add_argument("--name", help="hub and track name prefix (default: epiformer)")
    kind = hub.add_mutually_exclusive_group()
    kind.add_argument("--assembly-hub", dest="assembly_hub", action="store_true", default=None,
                      help="always write an assembly hub (the genome's sequence in the hub)")
    kind.add_argument("--ucsc-genome", dest="assembly_hub", action="store_false",
                      help="the genome is one UCSC hosts under the manifest's genome name")
    hub.add_argument("--organism", help="organism shown by UCSC for an assembly hub")
    hub.add_argument("--scientific-name", help="scientific name for an assembly hub")
    hub.add_argument("--annotation", metavar="GENES", help="a GTF (exons and CDS by transcript_id) or BED of genes "
                     "or elements, added as a bigBed track beside the predictions")
    hub.set_defaults(func=_hub)

    serve = sub.add_parser(
        "serve", help="serve the hub, tracks, genome and API (gunicorn + Flask)",
        description="Build the hub of PRECOMPUTE_DIR when it has none (or an outdated one), then run the "
                    "Flask app under gunicorn: the hub's files with byte ranges, the JSON API (/api/...) "
                    "and the page. Settings may also come from EPIFORMER_* variables (server/server_config.py); "
                    "the genome and conservation track default to the ones precompute used, the other "
                    "inference settings to the same defaults as every command.",
        epilog=EPILOG_SERVE, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("precompute_dir", help="the -o folder of epiformer precompute")
    add_model_set_arguments(serve, required=False)
    add_inference_arguments(serve, defaults=False)
    serve.add_argument("--hub-dir", help="hub folder (default: PRECOMPUTE_DIR/hub)")
    serve.add_argument("--annotation", metavar="GENES", help="a GTF or BED of genes for the hub and the page "
                       "(as epiformer hub --annotation)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: one per GPU, or 2)")
    serve.add_argument("--public-url", help="URL users reach the server at, for the hub links")
    serve.add_argument("--allowed-hosts", help="host names (comma-separated) whose requests may choose the links "
                                               "when there is no --public-url (default: --host and localhost)")
    serve.add_argument("--proxy-hops", type=int, metavar="N",
                       help="proxies in front (nginx: 1) whose X-Forwarded-For/-Proto give the client's address and "
                            "scheme (default: 0, none trusted)")
    serve.set_defaults(func=_serve)
