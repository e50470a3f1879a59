"""The page of `ddpm serve` in headless Chromium, driven over the DevTools protocol on a pipe (fds 3 and 4,
NUL-delimited JSON; no websocket library): the page loads the models and class names, Generate shows data-step
rising to done with no console errors or exceptions, a screenshot is saved (and must not be blank), and Cancel
stops a long run, as the API confirms. Exits 77 (skipped) when Chromium is not installed.
Run: DDPM_CLI=build/ddpm DDPM_MODELS=models DDPM_SCREENSHOT=serve.png /usr/bin/python3 tests/serve/test_browser.py"""
import base64
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One Chromium with one page, spoken to over --remote-debugging-pipe."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="ddpm_chromium_")
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def fds():  # the child reads commands on fd 3 and writes answers on fd 4 (dup first: either may be 3 or 4)
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--user-data-dir=" + self.profile, "--remote-debugging-pipe", "--window-size=1200,1300", "about:blank"],
            close_fds=False, preexec_fn=fds, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buffer = b""
        self.next_id = 0
        self.events = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(domain + ".enable", session=True)

    def _read_message(self):
        while b"\0" not in self.buffer:
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self.buffer += chunk
        msg, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, session=False, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read_message()
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError("%s: %s" % (method, m["error"]))
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError("page script failed: %s" % r["exceptionDetails"])
        return r["result"].get("value")

    def errors(self):
        """Exceptions, console errors and logged errors seen so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(p["exceptionDetails"].get("text", "exception"))
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") == "error":
                out.append("console.error: %s" % p.get("args"))
            elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append("log: %s" % p["entry"].get("text"))
        return out

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self.to_chrome)
        os.close(self.from_chrome)
        shutil.rmtree(self.profile, ignore_errors=True)


def write_grey_png(path, pixels, side=28):
    """An 8-bit grey PNG of side × side pixels (row-major bytes), written with zlib alone."""
    rows = b"".join(b"\0" + pixels[y * side:(y + 1) * side] for y in range(side))
    chunk = lambda kind, data: len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])) +
                chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def png_is_blank(png):
    """True if every pixel byte of an 8-bit PNG is equal (decoded with zlib: rows of filter byte + pixels)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(png):
        n = int.from_bytes(png[pos:pos + 4], "big")
        kind = png[pos + 4:pos + 8]
        if kind == b"IHDR":
            width = int.from_bytes(png[pos + 8:pos + 12], "big")
        if kind == b"IDAT":
            idat += png[pos + 8:pos + 8 + n]
        pos += 12 + n
    raw = zlib.decompress(idat)
    # With the "Sub"/"Up" filters a uniform image becomes mostly zeros; a real page has many distinct byte values.
    return len(set(raw)) < 8 or width == 0


@unittest.skipIf(CHROMIUM is None, "Chromium is not installed")
class Page(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = harness.temp_root()
        cls.models = harness.make_models(cls.root)
        cls.s = harness.Server(cls.models, "--cancel-grace", "1")
        try:
            cls.b = Browser()
        except Exception:
            cls.s.stop()  # tearDownClass does not run when setUpClass fails
            raise

    @classmethod
    def tearDownClass(cls):
        cls.b.close()
        if cls.s.stop() != 0:
            raise AssertionError("ddpm serve did not stop cleanly")

    def wait_for(self, expression, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.b.evaluate(expression)
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError("timed out waiting for %s (state %s)" % (
            expression, self.b.evaluate("document.body.dataset.state + ' ' + document.getElementById('status').textContent")))

    def generate_and_wait(self):
        """Clicks Generate, waits for the run to end, asserts it is done; returns the command line the page shows."""
        self.b.evaluate("document.getElementById('generate').click()")
        self.wait_for("['done', 'error', 'cancelled'].includes(document.body.dataset.state)", timeout=120)
        self.assertEqual(self.b.evaluate("document.body.dataset.state"), "done",
                         self.b.evaluate("document.getElementById('status').textContent"))
        return self.b.evaluate("document.getElementById('cli').textContent")

    def save_screenshot(self, variable, name):
        """The page as a PNG (not blank) at $variable, or `name` in the test's folder."""
        shot = base64.b64decode(self.b.call("Page.captureScreenshot", session=True, format="png")["data"])
        self.assertFalse(png_is_blank(shot))
        path = os.environ.get(variable, os.path.join(self.root, name))
        with open(path, "wb") as f:
            f.write(shot)
        print("screenshot: " + path, file=sys.stderr)

    def shown(self, element_id):
        """Whether the element is displayed (not just not [hidden]: a stylesheet can override that)."""
        return self.b.evaluate("getComputedStyle(document.getElementById('%s')).display !== 'none'" % element_id)

    def choose_file(self, path):
        """Picks `path` in the page's file input, as a user would."""
        root = self.b.call("DOM.getDocument", session=True)["root"]["nodeId"]
        node = self.b.call("DOM.querySelector", session=True, nodeId=root, selector="#image")["nodeId"]
        self.b.call("DOM.setFileInputFiles", session=True, nodeId=node, files=[path])

    def open(self, query):
        url = "http://127.0.0.1:%d/?%s" % (self.s.port, query)
        self.b.call("Page.navigate", session=True, url=url)
        self.wait_for("document.readyState === 'complete' && document.getElementById('model').options.length > 0")

    def test_1_generate_and_watch_it_form(self):
        self.open("model=fashion-mnist&class=all&sampler=ddim&steps=25&eta=0&seed=1&batch=1")
        names = self.b.evaluate("[...document.getElementById('class').options].map(o => o.textContent)")
        self.assertEqual(len(names), 11)  # all classes + 10 names
        self.assertIn("9: Ankle boot", names)
        self.b.evaluate("document.getElementById('generate').click()")
        steps = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            state, step = self.b.evaluate("[document.body.dataset.state, Number(document.body.dataset.step)]")
            if not steps or step != steps[-1]:
                steps.append(step)
            if state in ("done", "error", "cancelled"):
                break
            time.sleep(0.02)
        self.assertEqual(state, "done", self.b.evaluate("document.getElementById('status').textContent"))
        rising = [s for s in steps if s > 0]
        self.assertEqual(rising, sorted(set(rising)))
        self.assertGreaterEqual(len(rising), 3, steps)
        self.assertEqual(self.b.evaluate("document.querySelectorAll('#strip img').length"), 10)
        self.assertTrue(self.b.evaluate("document.getElementById('grid').src.startsWith('data:image/png')"))
        cli = self.b.evaluate("document.getElementById('cli').textContent")
        self.assertIn("--per-class -n 1 --seed 1", cli)
        self.assertIn("steps=25", self.b.evaluate("location.search"))
        self.assertEqual(self.b.errors(), [])
        self.save_screenshot("DDPM_SCREENSHOT", "serve.png")

    def test_2_cancel_mid_run(self):
        self.open("model=fashion-mnist&class=3&sampler=ddpm&steps=1000&seed=2&batch=2&autorun=1")
        self.wait_for("Number(document.body.dataset.step) >= 1")
        self.b.evaluate("document.getElementById('cancel').click()")
        self.wait_for("document.body.dataset.state === 'cancelled'", timeout=30)
        job = self.b.evaluate("document.body.dataset.job")
        status, body = self.s.json("GET", "/v1/generations/" + job)
        self.assertEqual(body["status"], "cancelled")
        self.assertLess(body["step"], 1000)
        self.assertEqual(self.b.errors(), [])

    def test_3_reload_mid_run_cancels_the_abandoned_job(self):
        self.open("model=fashion-mnist&class=4&sampler=ddpm&steps=1000&seed=3&batch=2&autorun=1")
        self.wait_for("Number(document.body.dataset.step) >= 1")
        job = self.b.evaluate("document.body.dataset.job")
        self.open("model=fashion-mnist")  # the page reloads without autorun: nobody watches the job any more
        body = self.s.wait_status(job, ["cancelled", "done"], timeout=60)  # --cancel-grace 1
        self.assertEqual(body["status"], "cancelled")
        self.assertIn("left", body["message"])
        self.assertEqual(self.b.errors(), [])

    def test_4_inpaint_an_uploaded_image_with_classifier_guidance(self):
        # A 28×28 grey PNG (a bright square on black) chosen in the file input as a user would.
        path = os.path.join(self.root, "upload.png")
        write_grey_png(path, bytes(200 if 6 <= x < 22 and 6 <= y < 22 else 0 for y in range(28) for x in range(28)))
        self.open("model=uncond&classifier=guide&classifier_scale=3&mode=inpaint&region=left&resample=2&steps=5&seed=4&batch=2")
        self.assertFalse(self.b.evaluate("document.getElementById('classifier-label').hidden"))
        self.assertTrue(self.b.evaluate("document.getElementById('sampler').disabled"))  # RePaint runs DDPM
        self.assertEqual(self.b.evaluate("document.getElementById('class').options.length"), 10)
        self.b.evaluate("document.getElementById('class').value = '7'")
        self.choose_file(path)
        self.wait_for("!document.getElementById('input-section').hidden")
        self.assertEqual(self.b.evaluate("document.getElementById('input-canvas').width"), 32)
        self.assertTrue(self.shown("region-label") and self.shown("resample-label"))
        self.assertFalse(self.shown("strength-label"))  # SDEdit's, not RePaint's
        cli = self.generate_and_wait()
        for part in (" inpaint ", "--region left --jump 10 --resample 2", "--class 7", "--classifier-scale 3", "--seed 4"):
            self.assertIn(part, cli)
        job = self.b.evaluate("document.body.dataset.job")
        status, body = self.s.json("GET", "/v1/generations/" + job)
        self.assertEqual(body["params"]["classifier"], "guide")
        self.assertEqual(self.b.errors(), [])
        # The same picture redrawn with SDEdit.
        self.b.evaluate("document.getElementById('mode').value = 'edit'; document.getElementById('mode').dispatchEvent(new Event('change'))")
        self.assertFalse(self.b.evaluate("document.getElementById('sampler').disabled"))
        self.b.evaluate("document.getElementById('sampler').value = 'ddim'; document.getElementById('steps').value = '8'")
        self.b.evaluate("document.getElementById('generate').click()")
        self.wait_for("['done', 'error', 'cancelled'].includes(document.body.dataset.state) && "
                      "document.body.dataset.job !== '%s'" % job, timeout=120)
        self.assertEqual(self.b.evaluate("document.body.dataset.state"), "done",
                         self.b.evaluate("document.getElementById('status').textContent"))
        self.assertIn(" edit ", self.b.evaluate("document.getElementById('cli').textContent"))
        self.assertEqual(self.b.errors(), [])

    def test_5_redraw_a_test_image_with_the_shipped_model_and_its_classifier(self):
        # Test image 9 of Fashion-MNIST (a sneaker), redrawn by SDEdit at strength 0.6 and guided towards class 9
        # (ankle boot) by the shipped noise-aware classifier; the page is saved as the editor's screenshot.
        if not os.path.exists(os.path.join(self.models, "fashion-mnist-noisy-classifier.safetensors")):
            self.skipTest("the shipped noise-aware classifier is not in " + harness.SHIPPED)
        with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
            f.read(16 + 9 * 28 * 28)
            pixels = f.read(28 * 28)
        path = os.path.join(self.root, "sneaker.png")
        write_grey_png(path, pixels)
        self.open("model=fashion-mnist&classifier=fashion-mnist-noisy-classifier&classifier_scale=5&mode=edit"
                  "&strength=0.6&sampler=ddim&steps=25&eta=0&seed=5&batch=4")
        self.assertFalse(self.b.evaluate("document.getElementById('classifier-label').hidden"))
        self.b.evaluate("document.getElementById('class').value = '9'")
        self.choose_file(path)
        self.wait_for("!document.getElementById('input-section').hidden")
        self.assertTrue(self.shown("strength-label"))
        self.assertFalse(self.shown("region-label") or self.shown("resample-label"))  # RePaint's, not SDEdit's
        cli = self.generate_and_wait()
        for part in (" edit ", "--strength 0.6", "--class 9", "--classifier-scale 5", "--seed 5"):
            self.assertIn(part, cli)
        self.assertEqual(self.b.errors(), [])
        self.save_screenshot("DDPM_EDITOR_SCREENSHOT", "serve_editor.png")


if __name__ == "__main__":
    if CHROMIUM is None:
        print("skipped: Chromium is not installed (apt-get install chromium)")
        sys.exit(77)
    unittest.main(verbosity=2)
