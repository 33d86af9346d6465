#!/usr/bin/env python3
"""Takes the screenshots of docs/walkthrough.md from a fresh `sluice serve`.

  scripts/walkthrough-screenshots.py [--sluice target/debug/sluice] [--out docs/screenshots]

It copies workflows/ into a temporary folder, starts the server there on a free port with a
webhook secret, lets the fresh schedules run drift_check (which starts retraining_trigger and
eval_pipeline) and the day's eval_pipeline, then delivers a signed pull-request event, and saves
each page of the walkthrough through chromedriver (Debian's `chromium` and
`chromium-driver`). Python 3's standard library only.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "walkthrough-token"
PASSWORD = "walkthrough-password"
SECRET = "walkthrough-secret"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method, url, body=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if body is not None and "Content-Type" not in request.headers:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
    except urllib.error.HTTPError as e:
        text = e.read()
    return json.loads(text) if text else {}


def wait_for(what, condition, limit=120):
    deadline = time.monotonic() + limit
    while True:
        try:
            value = condition()
        except OSError:  # not listening yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


class Api:
    def __init__(self, base):
        self.base = base

    def get(self, path):
        return call("GET", self.base + path, headers={"Authorization": f"Bearer {TOKEN}"})

    def runs(self):
        return self.get("/api/v1/runs?limit=100").get("runs", [])

    def ended(self, workflow, trigger):
        for run in self.runs():
            if run["workflow"] == workflow and run["trigger"] == trigger and run["state"] in ("success", "failed"):
                return run
        return None


class Browser:
    def __init__(self, driver):
        self.driver = driver
        options = {"args": ["--headless=new", "--no-sandbox", "--window-size=1400,1000", "--hide-scrollbars"]}
        chromium = shutil.which("chromium")
        if chromium:
            options["binary"] = chromium
        answer = call("POST", driver + "/session", {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}})
        self.session = f"{driver}/session/{answer['value']['sessionId']}"

    def go(self, url):
        call("POST", self.session + "/url", {"url": url})

    def element(self, css):
        found = call("POST", self.session + "/element", {"using": "css selector", "value": css})
        if ELEMENT not in found.get("value", {}):
            raise SystemExit(f"no element {css}: {found}")
        return f"{self.session}/element/{found['value'][ELEMENT]}"

    def type(self, css, text):
        call("POST", self.element(css) + "/value", {"text": text})

    def click(self, css):
        call("POST", self.element(css) + "/click", {})

    def shot(self, path):
        answer = call("GET", self.session + "/screenshot")
        with open(path, "wb") as f:
            f.write(base64.b64decode(answer["value"]))
        print("wrote", os.path.relpath(path, ROOT))

    def close(self):
        call("DELETE", self.session)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sluice", default=os.path.join(ROOT, "target", "debug", "sluice"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "screenshots"))
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="sluice-walkthrough-")
    shutil.copytree(os.path.join(ROOT, "workflows"), os.path.join(folder, "workflows"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    port, driver_port = free_port(), free_port()
    env = dict(os.environ, SLUICE_API_TOKEN=TOKEN, SLUICE_ADMIN_PASSWORD=PASSWORD,
               SLUICE_GITHUB_WEBHOOK_SECRET=SECRET)
    server = subprocess.Popen([args.sluice, "serve", "--bind", f"127.0.0.1:{port}"], cwd=folder, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = subprocess.Popen(["chromedriver", f"--port={driver_port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    api = Api(base)
    browser = None
    try:
        wait_for("the server", lambda: call("GET", base + "/healthz") is not None and api.get("/api/v1/workflows"))
        drift = wait_for("drift_check", lambda: api.ended("drift_check", "schedule"))
        retraining = wait_for("retraining_trigger", lambda: api.ended("retraining_trigger", "workflow"))
        promoted = wait_for("the retrained version's eval", lambda: api.ended("eval_pipeline", "workflow"))
        # The pull request comes once the retrained config is champion, as on a server that
        # has been up for a minute: the shipped config it carries then regresses.
        payload = open(os.path.join(ROOT, "tests", "fixtures", "github", "pull_request_opened.json"), "rb").read()
        signature = "sha256=" + hmac.new(SECRET.encode(), payload, hashlib.sha256).hexdigest()
        call("POST", base + "/hooks/github", payload, {
            "Content-Type": "application/json", "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": "walkthrough-1", "X-Hub-Signature-256": signature})
        pull_request = wait_for("the pull request's eval", lambda: api.ended("eval_pipeline", "github"))
        wait_for("chromedriver", lambda: call("GET", f"http://127.0.0.1:{driver_port}/status").get("value", {}).get("ready"))
        browser = Browser(f"http://127.0.0.1:{driver_port}")
        browser.go(base + "/login")
        browser.type("#name", "admin")
        browser.type("#password", PASSWORD)
        browser.click("form button[type=submit], form input[type=submit]")
        os.makedirs(args.out, exist_ok=True)
        pages = [
            ("walkthrough-workflows.png", "/"),
            ("walkthrough-pr-run.png", f"/runs/{pull_request['run_id']}"),
            ("walkthrough-eval-report.png", f"/runs/{pull_request['run_id']}/tasks/evaluate/eval"),
            ("walkthrough-drift-report.png", f"/runs/{drift['run_id']}/tasks/detect/drift"),
            ("walkthrough-retraining-run.png", f"/runs/{retraining['run_id']}"),
            ("walkthrough-promotion-run.png", f"/runs/{promoted['run_id']}"),
            ("walkthrough-experiments.png", "/experiments"),
            ("walkthrough-registry.png", "/models/assistant"),
            ("walkthrough-prompt-diff.png", "/models/assistant/diff?from=1&to=2"),
            ("walkthrough-deployments.png", "/models/assistant/deployments"),
        ]
        for name, path in pages:
            browser.go(base + path)  # WebDriver returns once the page has loaded
            browser.shot(os.path.join(args.out, name))
    finally:
        if browser:
            browser.close()
        driver.terminate()
        server.terminate()
        server.wait(timeout=30)
        driver.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
