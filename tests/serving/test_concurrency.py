"""8 client threads x 50 mixed enrolments and searches against one live server: nothing lost, nothing doubled."""

from __future__ import annotations

import threading
from collections import Counter

from live_server import png_bytes, start_server

THREADS, REQUESTS = 8, 50


def test_concurrent_enrolments_and_searches(tmp_path, model_files, drawings):
    images, _ = drawings
    encoded = [png_bytes(im) for im in images]
    server = start_server(
        tmp_path / "idx", ["--onnx", str(model_files["onnx"])], ["--api-key-file", str(model_files["keys"])]
    )
    acked: list[tuple[str, int]] = []
    statuses: Counter = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def client_thread(t: int) -> None:
        with server.client(headers=server.auth()) as client:
            for i in range(REQUESTS):
                data = encoded[(t * REQUESTS + i) % len(encoded)]
                if i % 2 == 0:  # enrol one or two images into one of 5 classes
                    files = [("image", (f"{t}-{i}-{j}.png", data, "image/png")) for j in range(1 + i % 4 // 2)]
                    r = client.post(f"/classes/class-{(t + i) % 5}/images", files=files)
                    ok = r.status_code == 201
                    if ok:
                        with lock:
                            acked.extend((f"class-{(t + i) % 5}", image_id) for image_id in r.json()["ids"])
                else:
                    r = client.post(
                        "/search",
                        params={"k": 5, "mode": ("images", "centroids")[i % 4 // 2]},
                        files=[("image", ("q.png", data, "image/png"))],
                    )
                    ok = r.status_code == 200 and len(r.json()["results"]) == 1
                with lock:
                    statuses[r.status_code] += 1
                    if not ok:
                        failures.append(f"{r.status_code} {r.text[:200]}")

    try:
        threads = [threading.Thread(target=client_thread, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not failures, failures[:5]
        assert sum(statuses.values()) == THREADS * REQUESTS and not any(s >= 500 for s in statuses)
        ids = [image_id for _, image_id in acked]
        assert len(ids) == len(set(ids))  # every acknowledged id is distinct
        with server.client() as client:
            classes = {c["name"]: c["count"] for c in client.get("/classes").json()["classes"]}
            assert classes == dict(Counter(name for name, _ in acked))  # counts add up: each enrolment once
            health = client.get("/health").json()
            assert health["images"] == len(ids)
            assert health["embedding"]["images"] >= len(ids) + THREADS * REQUESTS // 2  # enrolled + searched
            assert health["embedding"]["calls"] <= health["embedding"]["images"]
            for image_id in ids[:: max(1, len(ids) // 40)]:
                assert client.get(f"/images/{image_id}").status_code == 200
            # a search over everything returns each acknowledged id exactly once
            hits = client.post("/search", params={"k": len(ids)}, files=[("image", ("q.png", encoded[0], "image/png"))])
            assert sorted(h["id"] for h in hits.json()["results"][0]["hits"]) == sorted(ids)
    finally:
        server.stop()
