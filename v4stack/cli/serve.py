"""``v4stack serve [MODEL_DIR]``: the OpenAI-compatible server (FastAPI + uvicorn) on one or two checkpoints
(the served one and any other a tier names); default: the bundled demo model."""

from __future__ import annotations

import logging
from pathlib import Path

from v4stack.cli.args import int_arg
from v4stack.cli.engine_args import add_engine_args, engine_config_from_args
from v4stack.config.default_model import default_model_dir

DEFAULT_HOST = "127.0.0.1"  # local only unless asked: the server has no TLS
DEFAULT_PORT = 8000  # vLLM's default port
MAX_PORT = 65535

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (chat, completions, web page at /)")
    p.add_argument("model_dir", nargs="?", type=Path, default=None,
                   help="checkpoint directory (official layout); default: the bundled demo model")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: local only)")
    p.add_argument("--port", type=int_arg(0, MAX_PORT), default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--served-model-name", default=None, help="model name clients use (default: the folder name)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 routes")
    p.add_argument("--tiers", type=Path, default=None,
                   help="tiers file (JSON, format in v4stack/server/tiers.py); default: "
                        "v4stack/server/tiers.json")
    add_engine_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import uvicorn

    from v4stack.server.app import ServerSettings, create_app
    from v4stack.server.models import build_registry
    from v4stack.server.tiers import load_tiers

    model_dir = args.model_dir or default_model_dir()
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir}: no config.json (not a checkpoint directory)")
    config = engine_config_from_args(args)
    tiers = load_tiers(args.tiers)
    registry = build_registry(model_dir, args.served_model_name or model_dir.name, tiers, config)
    app = create_app(registry, ServerSettings(api_key=args.api_key))
    print(f"v4stack serve: {', '.join(registry.routes)} on http://{args.host}:{args.port} (chat page at /)",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
