"""The HTTP service: search, enrol and delete over an :class:`~centrum.serving.store.IndexStore`, and a web page.

Reads (``/health``, ``/search``, ``/classes``, ``/images/{id}``, ``/``) are open; writes need
``Authorization: Bearer <key>`` unless the service was started without keys (``--no-auth``). Every error is a
JSON ``{"detail": "..."}`` with a status that says what is wrong: 4xx for the request, 507 when the disk is full
(the write was not made; searches go on). The API page ``/docs`` loads Swagger UI from this server (the
``swagger-ui-py`` package's files), never from a CDN, so it works offline.
"""

from __future__ import annotations

import hmac
import importlib.util
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from centrum.inference.protocol import Embedder
from centrum.serving.batching import MicroBatcher
from centrum.serving.images import DEFAULT_MAX_PIXELS, BadImageError, decode_image, thumbnail_jpeg
from centrum.serving.store import IndexStore, NotFoundError, StorageError, check_class_name

MODES = ("images", "centroids")
# the Swagger UI files /docs needs, served from the swagger-ui-py package (name -> media type)
SWAGGER_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
# module-level defaults of the multipart field (FastAPI reads them from the signature)
QUERY_IMAGES = File(None, description="one or more query images")
ENROL_IMAGES = File(None, description="one or more images to enrol")


def swagger_ui_folder() -> Path | None:
    """The folder of Swagger UI's files in the installed ``swagger-ui-py`` package, or ``None`` without it."""
    spec = importlib.util.find_spec("swagger_ui")  # found without importing the package (and its web adapters)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if all((folder / name).is_file() for name in SWAGGER_ASSETS) else None


@dataclass
class ServiceSettings:
    """Limits and auth of a service: API keys (None = writes open), upload size, pixel limit, largest k."""

    api_keys: frozenset[str] | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_k: int = 1000
    max_files: int = 64
    extra: dict = field(default_factory=dict)


def create_app(store: IndexStore, embedder: Embedder, settings: ServiceSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``store`` with ``embedder`` (micro-batched) under ``settings``."""
    settings = settings or ServiceSettings()
    batcher = MicroBatcher(embedder)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batcher.close()
        store.close()

    app = FastAPI(
        title="centrum",
        description="Image retrieval by deep metric learning: search by image, enrol images into classes.",
        lifespan=lifespan,
        docs_url=None,  # replaced below by a page whose assets come from this server, not a CDN
        redoc_url=None,
    )
    app.state.store, app.state.batcher, app.state.settings = store, batcher, settings

    @app.middleware("http")
    async def limit_upload_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_upload_bytes:
            return JSONResponse(
                {"detail": f"upload of {length} bytes is over the limit of {settings.max_upload_bytes} bytes"},
                status_code=413,
            )
        return await call_next(request)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError):
        return JSONResponse({"detail": str(exc).strip("'\"")}, status_code=404)

    @app.exception_handler(StorageError)
    async def storage_failed(request: Request, exc: StorageError):
        # 507 Insufficient Storage: the client may retry once space is back; nothing was half-written
        return JSONResponse({"detail": str(exc)}, status_code=507 if exc.full else 500)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    def require_key(request: Request) -> None:
        if settings.api_keys is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise HTTPException(
                401, "this endpoint needs an API key: Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"}
            )
        if not any(hmac.compare_digest(key.strip().encode(), k.encode()) for k in settings.api_keys):
            raise HTTPException(403, "the API key is not valid")

    def read_images(files: list[UploadFile] | None) -> tuple[list, list[tuple[bytes, str]], list[str]]:
        if not files:
            raise HTTPException(400, "missing multipart field 'image': send one or more image files")
        if len(files) > settings.max_files:
            raise HTTPException(400, f"{len(files)} files in one request; the limit is {settings.max_files}")
        images, raw, names, total = [], [], [], 0
        for number, upload in enumerate(files):
            name = upload.filename or f"image #{number + 1}"
            data = upload.file.read(settings.max_upload_bytes + 1)
            total += len(data)
            if total > settings.max_upload_bytes:
                raise HTTPException(413, f"upload is over the limit of {settings.max_upload_bytes} bytes")
            try:
                image, suffix = decode_image(data, name, settings.max_pixels)
            except BadImageError as exc:
                raise HTTPException(400, str(exc)) from None
            images.append(image)
            raw.append((data, suffix))
            names.append(name)
        return images, raw, names

    def check_k(k: int) -> int:
        if not 1 <= k <= settings.max_k:
            raise HTTPException(400, f"k must be between 1 and {settings.max_k}, got {k}")
        return k

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        """The web page (search and enrol tabs; all assets inline)."""
        html = resources.files("centrum.serving").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    swagger = swagger_ui_folder()

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def api_page() -> HTMLResponse:
        """The interactive API page (Swagger UI, served locally)."""
        if swagger is None:
            return HTMLResponse(
                "<!doctype html><title>centrum API</title><link rel='icon' href='/favicon.svg'>"
                "<p>The interactive API page needs the <code>swagger-ui-py</code> package "
                "(<code>pip install 'centrum[serve]'</code>). The API schema is at "
                "<a href='/openapi.json'>/openapi.json</a>.</p>"
            )
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="centrum API",
            swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/favicon.svg",
        )

    @app.get("/static/swagger-ui/{name}", include_in_schema=False)
    def swagger_asset(name: str) -> Response:
        """One of Swagger UI's files (only the ones /docs loads)."""
        if swagger is None or name not in SWAGGER_ASSETS:
            raise HTTPException(404, f"no asset {name!r}")
        return FileResponse(swagger / name, media_type=SWAGGER_ASSETS[name], headers={"Cache-Control": "max-age=86400"})

    @app.get("/favicon.svg", include_in_schema=False)
    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        """The service's icon (for the page, /docs and browsers that ask for /favicon.ico)."""
        svg = resources.files("centrum.serving").joinpath("static/favicon.svg").read_bytes()
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    @app.get("/health")
    def health() -> dict:
        """Status, number of images and classes, embedding dimension and model name."""
        return {
            "status": "ok",
            "images": store.num_images,
            "classes": store.num_classes,
            "dim": store.dim,
            "metric": store.metric,
            "model": embedder.description,
            "auth": settings.api_keys is not None,
            # micro-batching at work: model calls made and images embedded since start
            "embedding": {"calls": batcher.batches, "images": batcher.images},
        }

    @app.post("/search")
    def search(
        image: list[UploadFile] | None = QUERY_IMAGES,
        k: int = Query(10, description="results per query"),
        mode: str = Query("images", description="'images' (per-image) or 'centroids' (one entry per class)"),
    ) -> dict:
        """The top-k images (with ids for ``/images/{id}``) or classes of each query image, nearest first."""
        check_k(k)
        if mode not in MODES:
            raise HTTPException(400, f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        images, _, names = read_images(image)
        vectors = batcher.embed(images)
        if mode == "images":
            hits = store.search_images(vectors, k)
            results = [
                [{"id": h.id, "class": h.class_name, "distance": h.distance, "path": h.path} for h in per]
                for per in hits
            ]
        else:
            hits = store.search_classes(vectors, k)
            results = [
                [
                    {"class": h.class_name, "distance": h.distance, "count": h.count, "example_id": h.example_id}
                    for h in per
                ]
                for per in hits
            ]
        return {"mode": mode, "k": k, "results": [{"query": n, "hits": r} for n, r in zip(names, results, strict=True)]}

    @app.post("/classes/{name}/images", status_code=201)
    def enrol(request: Request, name: str, image: list[UploadFile] | None = ENROL_IMAGES) -> dict:
        """Embed the images and enrol them into class ``name`` (created if new); return their ids."""
        require_key(request)
        try:
            name = check_class_name(name)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        images, raw, _ = read_images(image)
        vectors = batcher.embed(images)
        ids = store.enrol(name, vectors, images=raw)
        return {"class": name, "ids": ids, "count": store.classes().get(name, 0)}

    @app.get("/classes")
    def classes() -> dict:
        """Every class with its number of images."""
        counts = store.classes()
        return {"classes": [{"name": n, "count": c} for n, c in counts.items()], "total_images": sum(counts.values())}

    @app.delete("/classes/{name}")
    def delete_class(request: Request, name: str) -> dict:
        """Remove a class and its images."""
        require_key(request)
        return {"class": name, "deleted_images": store.delete_class(name)}

    @app.delete("/images/{image_id}")
    def delete_image(request: Request, image_id: int) -> dict:
        """Remove one image."""
        require_key(request)
        store.delete_image(image_id)
        return {"id": image_id, "deleted": True}

    @app.get("/images/{image_id}")
    def get_image(image_id: int) -> Response:
        """A JPEG thumbnail (longest side 256) of image ``image_id``."""
        path = store.image_path(image_id)
        try:
            data = thumbnail_jpeg(path)
        except (OSError, ValueError) as exc:
            raise HTTPException(404, f"image id {image_id}: its file {path} cannot be read ({exc})") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    return app
