"""The command line's serving and labelling parts: ``mmalign demo`` (the side-by-side Gradio page
that collects votes), ``mmalign serve-reward`` (a reward over HTTP) and ``mmalign prefs`` (the
preference store's stats and export)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli import DEFAULT_OUTPUT_ROOT, check_device, prepare_output_dir, print_table
from .errors import InvalidInputError


def command_prefs(args: argparse.Namespace) -> int:
    import pyarrow.parquet

    from .prefs import PreferenceStore

    if not Path(args.store).is_file():  # reading never starts an empty store
        raise InvalidInputError(f"STORE: {args.store!r} does not exist; pass the .db file of a preference store.")
    with PreferenceStore(args.store, create=False) as store:
        if args.prefs_command == "stats":
            report = {"store": str(store.path), **store.stats()}
        else:
            if Path(args.output).suffix != ".parquet":
                raise InvalidInputError(f"--output: export to a .parquet file, got {args.output!r}.")
            output = store.export_parquet(args.output)
            written = pyarrow.parquet.ParquetFile(output).metadata.num_rows  # others may be adding meanwhile
            report = {"store": str(store.path), "output": str(output), "records": written}
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.prefs_command == "export":
        print(f"wrote {report['output']} ({report['records']} pairs)")
    else:
        print(f"{report['total']} pairs over {report['prompts']} prompts in {report['store']}")
        for title in ("choice", "source", "annotator"):
            print()
            rows = [[name, str(count)] for name, count in report[f"by_{title}"].items()]
            print_table([title, "pairs"], rows, file=sys.stdout)  # sys.stdout of now, as print() uses
    return 0


def command_demo(args: argparse.Namespace) -> int:
    from .demo import DemoSession, app_module

    check_device(args.device)
    if args.port is not None and not 0 < args.port < 65536:
        raise InvalidInputError(f"--port: must lie in 1–65535, got {args.port}.")
    app = app_module()  # before the model loads: a missing gradio is reported at once
    session = DemoSession(args.model, lora=args.lora, rewards=",".join(args.reward or ["shapes-clip"]),
                          store=args.store, output_dir=prepare_output_dir(args.output_dir), device=args.device)
    print(f"mmalign demo: serving {args.model} on {args.host} (Ctrl+C stops it); labels go to {session.store.path}",
          file=sys.stderr)
    app.launch(session, host=args.host, port=args.port)
    return 0


def command_serve_reward(args: argparse.Namespace) -> int:
    from .rewards import load_reward
    from .rewards.server import RewardServer

    check_device(args.device)
    if not 0 <= args.port < 65536:
        raise InvalidInputError(f"--port: must lie in 0–65535 (0 picks a free one), got {args.port}.")
    if args.max_batch_size < 1:
        raise InvalidInputError(f"--max-batch-size: must be at least 1, got {args.max_batch_size}.")
    reward = load_reward(args.reward, device=args.device)
    server = RewardServer(reward, args.host, args.port, args.max_batch_size)
    address = server.url.removeprefix("http://")
    print(f"mmalign serve-reward: {reward.name} on {server.url}; score with load_reward('remote:{address}') "
          "(Ctrl+C stops it)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.httpd.server_close()
    return 0


def add_serving_parsers(commands) -> None:
    from .models import SHIPPED_MODELS

    prefs = commands.add_parser("prefs", help="inspect and export a preference store (labelled image pairs)")
    prefs_commands = prefs.add_subparsers(dest="prefs_command", metavar="SUBCOMMAND", required=True)
    prefs_stats = prefs_commands.add_parser("stats", help="count the pairs by choice, source and annotator")
    prefs_export = prefs_commands.add_parser(
        "export", help="write the pairs to Parquet, images embedded (datasets.load_dataset('parquet', ...) reads it)")
    prefs_export.add_argument("--output", required=True, metavar="FILE.parquet")
    for sub in (prefs_stats, prefs_export):
        sub.add_argument("store", metavar="STORE", help="the store's .db file")
        sub.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    prefs.set_defaults(run=command_prefs)

    demo = commands.add_parser(
        "demo", help="the Gradio demo: base against aligned side by side, with votes into a preference store",
        description="Serve the side-by-side demo (needs the demo extra: pip install 'mmalign[demo]'). It binds "
                    "to 127.0.0.1 with no share link unless --host says otherwise.")
    demo.add_argument("--model", default="shapes-turbo",
                      help=f"a shipped model ({', '.join(SHIPPED_MODELS)}), a pipeline folder or a hub id")
    demo.add_argument("--lora", default=None, metavar="DIR", help="a fine-tune's output_dir, compared with its base")
    demo.add_argument("--reward", action="append", metavar="NAME[=WEIGHT]",
                      help="the rewards shown and optimised, optionally weighted; repeat to combine (default: shapes-clip)")
    demo.add_argument("--store", default=None, help="the preference store's .db file (default: OUTPUT_DIR/preferences.db)")
    demo.add_argument("--host", default="127.0.0.1", help="the address to bind; 0.0.0.0 exposes the demo to your network")
    demo.add_argument("--port", type=int, default=None, help="default: Gradio's (7860, or the next free port)")
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--output-dir", default=str(DEFAULT_OUTPUT_ROOT / "demo"),
                      help="the store and the images the page shows; the only files it serves")
    demo.set_defaults(run=command_demo)

    serve = commands.add_parser(
        "serve-reward", help="serve a reward over HTTP, for `remote:HOST:PORT` rewards in another process",
        description="Serve any reward over HTTP (GET /card, POST /score with safetensors). Training processes "
                    "score with load_reward('remote:HOST:PORT'). Binds to 127.0.0.1 unless --host says otherwise.")
    serve.add_argument("reward", metavar="NAME", help="a reward name (see `mmalign rewards`)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to bind; 0.0.0.0 exposes it to your network")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    serve.add_argument("--device", default="cpu")
    serve.add_argument("--max-batch-size", type=int, default=64, help="the most samples one request may send")
    serve.set_defaults(run=command_serve_reward)
