#!/usr/bin/python3
"""Drives the daemon's web page in headless Chromium, as a user would, through chromedriver's
WebDriver protocol (plain HTTP and JSON: nothing beyond Debian's chromium-driver and Python's
standard library).

  web_driver.py URL SCENARIO [ARG...]

Scenarios (each prints "step: ..." as it goes and "PASS" at the end; a failure prints "FAIL:
why" and exits 1):
  list TORRENT_COUNT HOSTILE_NAME SEEDED_NAME FILE_COUNT
      the rows appear; the hostile name is shown as text and runs nothing; the seeded torrent's
      progress reaches 100% with no reload; its detail lists its files and trackers.
  manage TORRENT_FILE NAME
      Add by uploading the file; Stop and Start; Remove: cancel, then confirm with its data.
  add-path TORRENT_PATH NAME
      Add by a path on the server; garbage in the box gets an error in the dialog.
  limits
      the speed limits dialog sets the session's limits (checked over the RPC).
  phone
      at 390x844 the list (and a torrent's detail) fits the screen's width and its buttons
      are on screen.
  wanted TORRENT_NAME FILE_INDEX
      unticks a file in the detail and checks the session says it is unwanted.

With PW_WEB_SCREENSHOTS=DIR in the environment, `list` and `phone` keep screenshots of the page
(desktop-*.png, phone-*.png) in DIR.
"""
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class Failure(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(method, url, body=None, headers=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, dict(e.headers), json.loads(raw or b"{}")
        except ValueError:
            return e.code, dict(e.headers), {"raw": raw.decode(errors="replace")}


class Rpc:
    """Transmission's RPC from outside the page, to check what the page did."""

    def __init__(self, base):
        self.url = base.rstrip("/") + "/transmission/rpc"
        self.session = ""

    def __call__(self, method, arguments=None):
        for _ in range(2):
            status, headers, reply = http_json(
                "POST", self.url, {"method": method, "arguments": arguments or {}},
                {"X-Transmission-Session-Id": self.session})
            if status == 409:
                self.session = headers.get("X-Transmission-Session-Id", "")
                continue
            if status != 200 or reply.get("result") != "success":
                raise Failure(f"RPC {method}: HTTP {status} {reply}")
            return reply.get("arguments", {})
        raise Failure(f"RPC {method}: no session id")


class Browser:
    def __init__(self, width, height):
        self.profile = tempfile.mkdtemp(prefix="pw-chromium-")
        port = free_port()
        self.driver = subprocess.Popen(
            ["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                status, _, reply = http_json("GET", self.base + "/status", timeout=5)
                if status == 200 and reply.get("value", {}).get("ready"):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise Failure("chromedriver did not start")
            time.sleep(0.1)
        args = ["--headless=new", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", f"--user-data-dir={self.profile}",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-default-apps"]
        options = {"binary": "/usr/bin/chromium", "args": args}
        if width < 600:  # a phone: its viewport, not a narrow desktop window (headless has a minimum width)
            options["mobileEmulation"] = {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 3.0,
                                                            "touch": True}}
        reply = self.command("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options}}}, session=False)
        self.session = reply["sessionId"]

    def command(self, method, path, body=None, session=True):
        url = self.base + (f"/session/{self.session}" if session else "") + path
        status, _, reply = http_json(method, url, body if body is not None or method == "GET" else {})
        value = reply.get("value")
        if status != 200:
            error = value.get("error") if isinstance(value, dict) else value
            message = value.get("message", "") if isinstance(value, dict) else ""
            raise Failure(f"WebDriver {method} {path}: {error}: {message.splitlines()[0] if message else ''}")
        return value if session else dict(value, sessionId=value.get("sessionId"))

    def close(self):
        try:
            self.command("DELETE", "")
        except Exception:
            pass
        try:
            os.killpg(self.driver.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.driver.wait(timeout=10)
        subprocess.run(["rm", "-rf", self.profile], check=False)

    def go(self, url):
        self.command("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        return self.command("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css):
        self.command("POST", f"/element/{self.find(css)}/click", {})

    def type(self, css, text):
        self.command("POST", f"/element/{self.find(css)}/value", {"text": text})

    def alert(self):
        """The text of an open alert, or None."""
        try:
            return self.command("GET", "/alert/text")
        except Failure as e:
            if "no such alert" in str(e):
                return None
            raise

    def wait(self, what, script, *args, timeout=60):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = self.js(script, *args)
            if last:
                return last
            time.sleep(0.2)
        raise Failure(f"timed out waiting for {what} (last: {last!r}); page says: {self.page_message()}")

    def screenshot(self, name):
        """Keeps a PNG of the viewport as $PW_WEB_SCREENSHOTS/name (nothing without it)."""
        folder = os.environ.get("PW_WEB_SCREENSHOTS")
        if not folder:
            return
        png = base64.b64decode(self.command("GET", "/screenshot"))
        if not png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise Failure(f"the screenshot {name} is not a PNG")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "wb") as out:
            out.write(png)
        step(f"screenshot {name}: {len(png)} bytes")

    def page_message(self):
        try:
            return self.js("const m = document.getElementById('message'); return m.hidden ? '' : m.textContent;")
        except Failure:
            return "?"


ROW_ID = """
for (const tr of document.querySelectorAll('#torrents tbody tr')) {
  if (tr.querySelector('td.name button').textContent === arguments[0]) return tr.dataset.id;
}
return null;
"""


def row_css(browser, name):
    """A CSS selector for the row whose name is `name` (by its id), once it is shown."""
    row_id = browser.wait(f"the row of {name!r}", ROW_ID, name)
    return f'#torrents tbody tr[data-id="{row_id}"]'


def step(text):
    print("step:", text, flush=True)


def scenario_list(browser, base, rpc, count, hostile, seeded, file_count):
    browser.go(base + "/")
    browser.wait(f"{count} rows", "return document.querySelectorAll('#torrents tbody tr').length === arguments[0];",
                 int(count))
    step("rows shown")
    hostile_row = row_css(browser, hostile)
    shown = browser.js(f"return document.querySelector('{hostile_row} td.name button').textContent;")
    if shown != hostile:
        raise Failure(f"the hostile name shows as {shown!r}")
    images = browser.js("return document.querySelectorAll('main img, main script').length;")
    if images:
        raise Failure(f"{images} element(s) made from a torrent's name")
    if browser.alert() is not None:
        raise Failure("a torrent's name ran a script (an alert is open)")
    step("the hostile name is text")
    seeded_row = row_css(browser, seeded)
    browser.wait("the seeded torrent at 100% without a reload",
                 f"return document.querySelector('{seeded_row} .pct').textContent === '100.0%';", timeout=180)
    step("progress reached 100% live")
    browser.screenshot("desktop-list.png")
    browser.click(f"{seeded_row} td.name button")
    browser.wait("the detail with its files",
                 "return !document.getElementById('detail').hidden && "
                 "document.querySelectorAll('#files tbody tr').length === arguments[0];", int(file_count))
    title = browser.js("return document.getElementById('detail-name').textContent;")
    if title != seeded:
        raise Failure(f"the detail is of {title!r}")
    done = browser.js("return [...document.querySelectorAll('#files tbody .done')].map(e => e.textContent);")
    if any(d != "100.0%" for d in done):
        raise Failure(f"files not shown done: {done}")
    browser.wait("its tracker", "return document.querySelectorAll('#trackers tbody tr').length >= 1;")
    step("detail shows files and trackers")
    browser.screenshot("desktop-detail.png")
    browser.click("#detail-close")
    browser.wait("the detail closed", "return document.getElementById('detail').hidden;")


def scenario_manage(browser, base, rpc, torrent_file, name):
    browser.go(base + "/")
    browser.wait("the page", "return document.querySelector('#torrents') !== null;")
    browser.click("#add-open")
    browser.wait("the add dialog", "return document.getElementById('add-dialog').open;")
    browser.type("#add-file", torrent_file)
    browser.click("#add-paused")
    browser.click("#add-submit")
    browser.wait("the add dialog closed", "return !document.getElementById('add-dialog').open;")
    row = row_css(browser, name)
    step("added by uploading the .torrent")
    browser.wait("it paused", f"return document.querySelector('{row} .start-stop').textContent === 'Start';")
    browser.click(f"{row} .start-stop")
    browser.wait("it started", f"return document.querySelector('{row} .start-stop').textContent === 'Stop';")
    torrents = rpc("torrent-get", {"fields": ["name", "status"]})["torrents"]
    if not any(t["name"] == name and t["status"] != 0 for t in torrents):
        raise Failure(f"the session does not show {name!r} started: {torrents}")
    browser.click(f"{row} .start-stop")
    browser.wait("it stopped", f"return document.querySelector('{row} .start-stop').textContent === 'Start';")
    torrents = rpc("torrent-get", {"fields": ["name", "status"]})["torrents"]
    if not any(t["name"] == name and t["status"] == 0 for t in torrents):
        raise Failure(f"the session does not show {name!r} stopped: {torrents}")
    step("stop and start")
    browser.click(f"{row} .remove")
    browser.wait("the remove dialog", "return document.getElementById('remove-dialog').open;")
    asked = browser.js("return document.getElementById('remove-name').textContent;")
    if asked != name:
        raise Failure(f"the confirmation names {asked!r}")
    browser.click("#remove-cancel")
    browser.wait("the remove dialog closed", "return !document.getElementById('remove-dialog').open;")
    time.sleep(2.5)  # a poll later it is still there
    if not browser.js(f"return document.querySelector('{row}') !== null;"):
        raise Failure("cancelling the removal removed it")
    step("removal cancelled")
    browser.click(f"{row} .remove")
    browser.wait("the remove dialog", "return document.getElementById('remove-dialog').open;")
    browser.click("#remove-data")
    browser.click("#remove-confirm")
    browser.wait("the row gone", f"return document.querySelector('{row}') === null;")
    torrents = rpc("torrent-get", {"fields": ["name"]})["torrents"]
    if any(t["name"] == name for t in torrents):
        raise Failure(f"the session still has {name!r}")
    step("removed with its data")


def scenario_add_path(browser, base, rpc, path, name):
    browser.go(base + "/")
    browser.wait("the page", "return document.querySelector('#torrents') !== null;")
    browser.click("#add-open")
    browser.type("#add-link", "not a link nor a path")
    browser.click("#add-submit")
    error = browser.wait("an error in the dialog",
                         "const e = document.getElementById('add-error'); return e.hidden ? '' : e.textContent;")
    if not browser.js("return document.getElementById('add-dialog').open;"):
        raise Failure("the dialog closed on an error")
    step(f"garbage refused: {error}")
    browser.js("document.getElementById('add-link').value = '';")
    browser.type("#add-link", path)
    browser.click("#add-submit")
    browser.wait("the add dialog closed", "return !document.getElementById('add-dialog').open;")
    row_css(browser, name)
    step("added by path")


def scenario_limits(browser, base, rpc):
    browser.go(base + "/")
    browser.click("#limits-open")
    browser.wait("the limits dialog with the session's values",
                 "return document.getElementById('limits-dialog').open && document.getElementById('limit-down').value !== '';")
    browser.js("document.getElementById('limit-down').value = ''; document.getElementById('limit-up').value = '';")
    browser.type("#limit-down", "500")
    browser.type("#limit-up", "200")
    if not browser.js("return document.getElementById('limit-down-on').checked;"):
        browser.click("#limit-down-on")
    if browser.js("return document.getElementById('limit-up-on').checked;"):
        browser.click("#limit-up-on")
    browser.click("#limits-save")
    browser.wait("the limits dialog closed", "return !document.getElementById('limits-dialog').open;")
    session = rpc("session-get", {"fields": ["speed-limit-down", "speed-limit-down-enabled", "speed-limit-up",
                                             "speed-limit-up-enabled"]})
    want = {"speed-limit-down": 500, "speed-limit-down-enabled": True, "speed-limit-up": 200,
            "speed-limit-up-enabled": False}
    if any(session.get(k) != v for k, v in want.items()):
        raise Failure(f"the session's limits are {session}, not {want}")
    step("limits set")


def expect_fits(browser, what):
    fits = browser.js("return [document.documentElement.scrollWidth, window.innerWidth];")
    if fits[0] > fits[1]:
        raise Failure(f"{what}: the page is {fits[0]} px wide on a {fits[1]} px screen")
    return fits[1]


def scenario_phone(browser, base, rpc):
    browser.go(base + "/")
    browser.wait("rows", "return document.querySelectorAll('#torrents tbody tr').length > 0;")
    width = expect_fits(browser, "the list")
    off = browser.js("""
        const out = [];
        for (const b of document.querySelectorAll('#torrents button')) {
          const r = b.getBoundingClientRect();
          if (r.right > window.innerWidth || r.left < 0 || r.width === 0) out.push(b.textContent);
        }
        return out;""")
    if off:
        raise Failure(f"buttons off the screen: {off}")
    step(f"the list fits a {width} px screen")
    browser.screenshot("phone-list.png")
    browser.click("#torrents tbody tr td.name button")
    browser.wait("the detail with its files",
                 "return !document.getElementById('detail').hidden && "
                 "document.querySelectorAll('#files tbody tr').length > 0;")
    expect_fits(browser, "the detail")
    step(f"the detail fits a {width} px screen")
    browser.screenshot("phone-detail.png")


def scenario_wanted(browser, base, rpc, name, index):
    browser.go(base + "/")
    row = row_css(browser, name)
    browser.click(f"{row} td.name button")
    index = int(index)
    box = f'#files tbody tr[data-index="{index}"] input[type=checkbox]'
    browser.wait("the file's box, ticked", f"const b = document.querySelector('{box}'); return b !== null && b.checked;")
    browser.click(box)
    deadline = time.time() + 30
    while True:
        torrent = [t for t in rpc("torrent-get", {"fields": ["name", "wanted"]})["torrents"] if t["name"] == name][0]
        if not torrent["wanted"][index]:
            break
        if time.time() > deadline:
            raise Failure(f"the session still wants file {index}: {torrent['wanted']}")
        time.sleep(0.2)
    step(f"file {index} unwanted")


SCENARIOS = {"list": (scenario_list, (1280, 800)), "manage": (scenario_manage, (1200, 800)),
             "add-path": (scenario_add_path, (1200, 800)), "limits": (scenario_limits, (1200, 800)),
             "phone": (scenario_phone, (390, 844)), "wanted": (scenario_wanted, (1200, 800))}


def main():
    if len(sys.argv) < 3 or sys.argv[2] not in SCENARIOS:
        print(__doc__, file=sys.stderr)
        return 2
    base, name, args = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3:]
    function, (width, height) = SCENARIOS[name]
    browser = None
    try:
        browser = Browser(width, height)
        function(browser, base, Rpc(base), *args)
        print("PASS", flush=True)
        return 0
    except Failure as e:
        print(f"FAIL: {e}", flush=True)
        return 1
    finally:
        if browser:
            browser.close()


if __name__ == "__main__":
    sys.exit(main())
