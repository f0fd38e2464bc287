"""What an image costs the server before the engine sees it: ``MediaConnector`` loading one
336x336 (LLaVA-1.5's input) and one 1280x960 photo-sized image from a ``data:`` URL, a
``file://`` path and ``http://127.0.0.1`` (a threaded ``http.server``), one at a time (the
offline ``LLM.chat`` path) and 32 at once on the event loop (the server path: downloads
concurrent, base64 and Pillow decoding in worker threads). CPU only, a few seconds.

    python benchmarks/media_loading.py [--repeat 20]

Prints milliseconds per image and images per second; writes ``$OUT/media_loading.json`` when
``$OUT`` is set.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server.media_http import media_http_server  # noqa: E402
from vllm_core.multimodal.media import MediaConnector  # noqa: E402


def photo(width: int, height: int, fmt: str) -> bytes:
    """Noisy gradients (compress like a photo, unlike a flat test image)."""
    from PIL import Image

    rng = random.Random(width * height)
    img = Image.effect_noise((width, height), 64).convert("RGB")
    img = Image.blend(img, Image.linear_gradient("L").resize((width, height)).convert("RGB"), 0.5)
    img = img.rotate(rng.randrange(360))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=32)
    args = parser.parse_args()
    images = {f"{w}x{h}.{fmt.lower()}": photo(w, h, fmt) for w, h in ((336, 336), (1280, 960)) for fmt in ("PNG", "JPEG")}
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, media_http_server({f"/{k}": v for k, v in images.items()}) as http:
        for name, raw in images.items():
            Path(tmp, name).write_bytes(raw)
        connector = MediaConnector.create(tmp, fetch_timeout=30, max_bytes=64 << 20)
        print(f"{'image':>16} {'KiB':>6} {'source':>6} {'sync ms':>8} {'async x' + str(args.concurrent) + ' img/s':>16}")
        for name, raw in images.items():
            mime = "png" if name.endswith("png") else "jpeg"
            urls = {"data": f"data:image/{mime};base64,{base64.b64encode(raw).decode()}",
                    "file": f"file://{tmp}/{name}", "http": http.url(f"/{name}")}
            for kind, url in urls.items():
                connector.load_image(url)  # warm-up (Pillow plugins, the connection)
                start = time.perf_counter()
                for _ in range(args.repeat):
                    connector.load_image(url)
                sync_ms = (time.perf_counter() - start) / args.repeat * 1e3

                async def many(u: str = url) -> float:
                    t0 = time.perf_counter()
                    await asyncio.gather(*(connector.load_image_async(u) for _ in range(args.concurrent)))
                    return args.concurrent / (time.perf_counter() - t0)

                per_s = asyncio.run(many())
                results.append({"image": name, "bytes": len(raw), "source": kind, "sync_ms": round(sync_ms, 3),
                                "async_images_per_s": round(per_s, 1)})
                print(f"{name:>16} {len(raw) / 1024:6.0f} {kind:>6} {sync_ms:8.2f} {per_s:16.0f}")
    out = os.environ.get("OUT")
    if out:
        Path(out, "media_loading.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
