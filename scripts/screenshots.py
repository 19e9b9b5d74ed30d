"""Regenerate the MLflow UI pictures in docs/: a real sweep (the four modes x 2 seeds on the
synthetic set) into a fresh SQLite store, `mlflow ui` on 127.0.0.1 and a free port, and Debian's
chromium, headless, driven over the DevTools protocol (aiohttp, which MLflow installs, speaks
it). The server and the browser are stopped at the end, whatever happens.

    apt-get install -y chromium          # once
    .venv/bin/python scripts/screenshots.py [--out docs] [--keep FOLDER]

Each picture is what a user sees at `tracking.ui_link`, after the clicks named beside it."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from mlflow.tracking import MlflowClient

from chelation import tracking

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "first_look"
WIDTH, HEIGHT = 1600, 1000
# the columns a user ticks (or unticks: Source, Models) under "Columns" for the runs picture
COLUMNS = ("Source", "Models", "ndcg_at_10", "val_ndcg_at_10", "recall_at_100",
           "sweep_chosen_test_ndcg_at_10")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sweep(folder: Path) -> str:
    uri = f"sqlite:///{folder}/mlflow.db"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "experiments.train", "-m",
                    "mode=frozen,baseline,offline,hybrid", "seed=0,1", f"tracking.uri={uri}",
                    f"tracking.experiment={EXPERIMENT}", "show_progress=false",
                    f"hydra.sweep.dir={folder}/multirun"], cwd=folder, env=env, check=True)
    return uri


@contextlib.contextmanager
def started(cmd: list[str], ready_url: str, log: Path) -> Iterator[None]:
    """Run `cmd` until the block ends; wait until `ready_url` answers first."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(ready_url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"{cmd[0]} did not start: see {log}") from None
                time.sleep(0.5)
        yield
    finally:  # the whole process group: the server's workers and the browser's helpers too
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Tab:
    """One browser tab over the DevTools protocol: commands, scripts, clicks, pictures."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, base: str):
        self.ws, self.base, self.calls = ws, base, 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.calls += 1
        await self.ws.send_json({"id": self.calls, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.calls:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def js(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        return result["result"].get("value")

    async def open(self, fragment: str, settle: float = 6.0) -> None:
        """Load the page afresh (the UI reads its stored settings only when it starts)."""
        await self.call("Page.navigate", url=f"{self.base}/{fragment}")
        await asyncio.sleep(0.5)
        await self.call("Page.reload", ignoreCache=True)
        await asyncio.sleep(settle)

    async def click(self, text: str, selector: str = "button", settle: float = 1.0,
                    pick: int = -1) -> None:
        """Click an element under `selector` whose text is exactly `text` (the last one, or the
        `pick`-th), scrolled to the top of the view."""
        found = await self.js(f"""(() => {{
            const all = Array.from(document.querySelectorAll({json.dumps(selector)}))
                .filter(e => e.innerText && e.innerText.trim() === {json.dumps(text)});
            // the innermost of nested matches: one per thing on the page
            const hits = all.filter(e => !all.some(o => o !== e && e.contains(o)));
            const hit = hits.at({pick});
            if (!hit) return false;
            hit.scrollIntoView(); hit.click(); return true;
        }})()""")
        if not found:
            raise RuntimeError(f"nothing to click reads {text!r}")
        await asyncio.sleep(settle)

    async def type_into(self, placeholder: str, text: str, settle: float = 2.0) -> None:
        focused = await self.js(f"""(() => {{
            const el = document.querySelector('input[placeholder={json.dumps(placeholder)}]');
            if (el) el.focus(); return Boolean(el);
        }})()""")
        if not focused:
            raise RuntimeError(f"no input with placeholder {placeholder!r}")
        await self.call("Input.insertText", text=text)
        await asyncio.sleep(settle)

    async def key(self, key: str, code: str) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.call("Input.dispatchKeyEvent", type=kind, key=key, code=code)
        await asyncio.sleep(0.5)

    async def shot(self, path: Path) -> None:
        picture = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(picture["data"]))
        print(f"{path}: {path.stat().st_size // 1024} KiB")


async def take_pictures(debug_port: int, base: str, uri: str, out: Path) -> None:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = {r.info.run_name: r.info.run_id for r in client.search_runs([experiment])}
    runs_page = tracking.ui_link(experiment, base).removeprefix(f"{base}/")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{debug_port}/json/list") as answer:
            page = next(t for t in await answer.json() if t["type"] == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            tab = Tab(ws, base)
            await tab.call("Page.enable")
            await tab.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                           deviceScaleFactor=1, mobile=False)
            await tab.open("#/experiments")
            # MLflow's assistant panel opens by itself on a first visit; a user closes it once
            await tab.js("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false')")

            await tab.open(runs_page)
            await tab.click("Columns")
            for column in COLUMNS:
                await tab.click(column, "[role=menuitemcheckbox], [role=option], label, span",
                                settle=0.3)
            await tab.key("Escape", "Escape")
            await tab.shot(out / "mlflow_runs.png")

            await tab.open(f"{runs_page}&compareRunsMode=CHART")
            await tab.type_into("Search metric charts", "ndcg_at_10")
            await tab.shot(out / "mlflow_charts.png")

            pair = [runs["frozen/all-MiniLM-L6-v2/seed0"],
                    runs["hybrid/minilm/constant:0.5/procrustes/seed0"]]
            await tab.open(f"#/compare-runs?runs={json.dumps(pair)}"
                           f"&experiments={json.dumps([experiment])}"
                           "&workflowType=machine_learning", settle=8)
            # folded, the plots leave the page to the two runs' metrics and parameters
            await tab.click("Visualizations", "button, [role=button], span, h2")
            for section in (1, 0):  # metrics, then parameters: what differs, from the top
                await tab.click("Show diff only", "label, span, button", pick=section)
            await tab.shot(out / "mlflow_compare.png")

            parent = next(i for name, i in runs.items() if name.startswith("sweep "))
            await tab.open(f"#/experiments/{experiment}/runs/{parent}"
                           "?workflowType=machine_learning")
            await tab.shot(out / "mlflow_sweep_run.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--keep", type=Path, help="run the sweep in this folder and keep it")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        folder = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)
        uri = run_sweep(folder.resolve())
        port, debug_port = free_port(), free_port()
        base = f"http://127.0.0.1:{port}"
        stack.enter_context(started(
            [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
             "--host", "127.0.0.1", "--port", str(port)], f"{base}/health",
            folder / "mlflow_ui.log"))
        stack.enter_context(started(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
             f"--remote-debugging-port={debug_port}", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={folder / 'chromium-profile'}", f"--window-size={WIDTH},{HEIGHT}",
             "about:blank"], f"http://127.0.0.1:{debug_port}/json/version",
            folder / "chromium.log"))
        asyncio.run(take_pictures(debug_port, base, uri, args.out))


if __name__ == "__main__":
    main()
