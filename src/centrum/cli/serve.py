"""``centrum serve --index DIR (--checkpoint CKPT | --onnx FILE)``: the search service and its web page."""

from __future__ import annotations

import argparse
import errno
import socket
from pathlib import Path

from centrum.cli._inputs import HelpFormatter


def read_api_keys(path: Path) -> frozenset[str]:
    """The API keys of ``path``: one per line; blank lines and ``#`` comments ignored."""
    if not path.is_file():
        raise FileNotFoundError(f"--api-key-file {path} does not exist")
    keys = frozenset(
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    )
    if not keys:
        raise ValueError(f"--api-key-file {path} holds no key (one key per line)")
    return keys


def search_engines(args: argparse.Namespace, dim: int, metric: str) -> tuple | None:
    """``--backend qdrant``: an image collection and a centroid collection, emptied and then filled from the
    index folder by the store (the folder's snapshot and journal stay the record of truth); ``None`` for the
    built-in torch index."""
    backend = args.backend
    flags = [args.qdrant_path, args.qdrant_url, args.qdrant_api_key_file]
    if backend == "torch":
        if any(v is not None for v in flags):
            raise ValueError("--qdrant-path/--qdrant-url/--qdrant-api-key-file need --backend qdrant")
        return None
    if backend != "qdrant":
        raise ValueError(f"unknown --backend {backend!r}; choose torch or qdrant")
    from centrum.cli.index import qdrant_errors
    from centrum.retrieval.backends import open_backend
    from centrum.retrieval.backends.qdrant_backend import qdrant_client

    if (args.qdrant_path is None) == (args.qdrant_url is None):
        raise ValueError("--backend qdrant needs exactly one of --qdrant-path DIR (local) or --qdrant-url URL")
    where: dict = {}
    if args.qdrant_path is not None:
        where["path"] = str(Path(args.qdrant_path).expanduser().resolve())
    else:
        where["url"] = args.qdrant_url
        if args.qdrant_api_key_file is not None:
            if not args.qdrant_api_key_file.is_file():
                raise FileNotFoundError(f"--qdrant-api-key-file {args.qdrant_api_key_file} does not exist")
            where["api_key"] = args.qdrant_api_key_file.read_text().strip()
    names = (f"{args.collection}_images", f"{args.collection}_centroids")
    try:
        with qdrant_errors(where.get("url") or where["path"]):
            client = qdrant_client(**where)
            for name in names:
                if client.collection_exists(name):
                    client.delete_collection(name)
            return (
                open_backend("qdrant", dim, kind="image", metric=metric, collection=names[0], **where),
                open_backend("qdrant", dim, kind="centroid", metric=metric, collection=names[1], **where),
            )
    except (RuntimeError, ValueError, OSError) as exc:
        # the qdrant backend names a held folder itself (QdrantFolderInUseError, a ValueError); an older one
        # lets the client's RuntimeError through
        if "path" in where and "already accessed" in str(exc):
            raise ValueError(locked_folder_message(where["path"])) from None
        if isinstance(exc, RuntimeError):
            raise ValueError(f"qdrant at {where.get('url') or where['path']}: {exc}") from None
        raise


def locked_folder_message(path: str) -> str:
    """What to say when another process holds a local Qdrant folder."""
    return (
        f"--qdrant-path {path} is in use by another process (another `centrum serve`, `index build` or "
        "`index search`): Qdrant's local mode lets one process at a time open a folder; stop that process, "
        "or run a Qdrant server and pass --qdrant-url to share one index"
    )


def bind_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (listening starts when the server runs), so a port in use is reported
    before anything is printed or loaded: ``ValueError`` with one line."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(
                f"port {port} on {host} is already in use: stop what listens there, or pass --port N"
            ) from None
        if exc.errno == errno.EACCES:
            raise ValueError(f"port {port} on {host} needs privileges: choose --port 1024 or above") from None
        raise ValueError(f"cannot listen on --host {host} --port {port}: {exc.strerror or exc}") from None
    return sock


def build_service(args: argparse.Namespace):
    """The app of ``args`` (checks everything before a port is opened)."""
    from centrum.inference import OnnxEmbedder, load_embedder
    from centrum.serving.app import ServiceSettings, create_app
    from centrum.serving.store import IndexStore

    if (args.checkpoint is None) == (args.onnx is None):
        raise ValueError("give exactly one model: --checkpoint CKPT (or a TorchScript file) or --onnx FILE")
    if args.api_key_file is None and not args.no_auth:
        raise ValueError(
            "refusing to start: the write endpoints (enrol, delete) need API keys; pass --api-key-file FILE "
            "(one key per line), or --no-auth to let anyone who can reach the port enrol and delete"
        )
    keys = read_api_keys(args.api_key_file) if args.api_key_file is not None else None
    if args.max_upload_mb <= 0 or args.max_pixels <= 0:
        raise ValueError("--max-upload-mb and --max-pixels must be positive")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.onnx is not None:
        if args.onnx.suffix.lower() != ".onnx":
            raise ValueError(f"--onnx {args.onnx}: expected a .onnx file written by `centrum export`")
        embedder = OnnxEmbedder(args.onnx, threads=args.threads or None)
    else:
        embedder = load_embedder(args.checkpoint, args.device)
    engines = search_engines(args, embedder.dim, embedder.metric)
    try:
        store = IndexStore(
            args.index,
            embedder.dim,
            embedder.metric,
            compact_every=args.compact_every,
            engines=engines,
            recover=args.recover,
        )
    except BaseException:
        for engine in engines or ():
            engine.close()  # release a local Qdrant folder
        raise
    settings = ServiceSettings(
        api_keys=keys, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels
    )
    return create_app(store, embedder, settings), store, embedder


def run(args: argparse.Namespace) -> int:
    """Start the service and serve until interrupted."""
    import uvicorn

    sock = bind_port(args.host, args.port)  # before the model loads and before the banner
    try:
        app, store, embedder = build_service(args)
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    auth = "writes need an API key" if args.api_key_file else "NO AUTH: anyone can enrol and delete"
    print(
        f"centrum serve: http://{args.host}:{port}/ ({store.num_images} images, {store.num_classes} classes, "
        f"{embedder.dim}-d, model {embedder.description}; {auth}); API docs at /docs",
        flush=True,
    )
    config = uvicorn.Config(app, host=args.host, port=port, log_level=args.log_level, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` command."""
    p = subparsers.add_parser(
        "serve",
        help="serve search and enrolment over HTTP, with a web page",
        description="Serve an index folder over HTTP: POST /search, POST /classes/{name}/images, DELETE, "
        "GET /classes, GET /images/{id} (thumbnails), GET /health, a web page at / and the API at /docs. "
        "Enrolments are journalled (fsynced) before they are acknowledged.",
        epilog="examples:\n"
        "  centrum serve --index my-index --onnx model.onnx --api-key-file api-keys.txt --port 8000\n"
        "  centrum serve --index my-index --checkpoint runs/fmnist/model.ckpt --no-auth   # reads and writes open\n"
        "  curl -F image=@query.jpg 'http://127.0.0.1:8000/search?k=5'",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--index", required=True, type=Path, help="index folder (created if missing)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="model.ckpt from `centrum train`, or a TorchScript or ONNX export (told apart by content)",
    )
    p.add_argument("--onnx", type=Path, help="model.onnx from `centrum export --format onnx`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 for every interface (then use API keys)")  # fmt: skip
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    p.add_argument("--api-key-file", type=Path, help="file of API keys (one per line) that the write endpoints accept")
    p.add_argument("--no-auth", action="store_true", help="allow writes without a key (trusted networks only)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body (default 20 MB)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest image in pixels (default 40 M)")
    p.add_argument("--compact-every", type=int, default=1000, help="journal records between snapshots")
    p.add_argument(
        "--recover",
        action="store_true",
        help="start despite damaged journal records: keep every intact record, move the damaged lines to "
        "journal.log.damaged-<time>, ids continue past any used (see docs/serving.md)",
    )
    p.add_argument("--device", default="cpu", help="torch device of a checkpoint model (default cpu)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for the model (default: all)")
    p.add_argument("--backend", default="torch", choices=("torch", "qdrant"),
                   help="search engine: built-in torch index, or Qdrant (refilled from --index at start)")  # fmt: skip
    p.add_argument("--qdrant-path", type=Path, help="qdrant: a local folder (embedded mode, one machine)")
    p.add_argument("--qdrant-url", help="qdrant: a server or cluster, e.g. http://localhost:6333")
    p.add_argument("--qdrant-api-key-file", type=Path, help="qdrant: a file holding the server's API key")
    p.add_argument("--collection", default="centrum_serve", help="qdrant: prefix of the two collections")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=run)
