"""`ddpm serve` end to end over real HTTP on loopback: events in order, images equal to `ddpm sample`'s bytes,
cancellation, queue order and 429, streams that do not starve /health, no leaked threads or sockets, a table of
bad requests, the API key, and a clean stop on SIGTERM.
Run: DDPM_CLI=build/ddpm DDPM_MODELS=models /usr/bin/python3 tests/serve/test_api.py"""
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

ROOT = None
MODELS = None


def setUpModule():
    global ROOT, MODELS
    ROOT = harness.temp_root()
    MODELS = harness.make_models(ROOT)


class Api(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = harness.Server(MODELS, "--max-queue", "8", "--cancel-grace", "1")

    @classmethod
    def tearDownClass(cls):
        code = cls.s.stop()
        if code != 0:
            raise AssertionError("ddpm serve exited with %d on SIGTERM" % code)

    def test_models_and_capabilities(self):
        status, body = self.s.json("GET", "/v1/models")
        self.assertEqual(status, 200)
        ids = [m["id"] for m in body["models"]]
        self.assertEqual(ids, ["cond", "fashion-mnist", "uncond"])
        fm = body["models"][1]
        self.assertEqual(fm["item_shape"], [1, 32, 32])
        self.assertEqual(fm["class_names"][0], "T-shirt/top")
        self.assertTrue(fm["guidance"])
        self.assertNotIn(MODELS, json.dumps(body))
        status, caps = self.s.json("GET", "/v1/capabilities")
        self.assertEqual([x["name"] for x in caps["samplers"]], ["ddpm", "ddim", "dpm++", "langevin"])
        self.assertEqual(caps["limits"]["max_queue"], 8)

    def test_steps_arrive_in_order_and_images_equal_ddpm_sample(self):
        job = self.s.submit(model="fashion-mnist", sampler="ddim", steps=12, eta=0.5, **{"class": 1}, guidance=1.0,
                            seed=42, batch=2)
        names, steps, done = [], [], None
        for name, data in self.s.events(job["id"]):
            names.append(name)
            if name == "step":
                steps.append(data["step"])
                self.assertEqual(data["of"], 12)
                self.assertTrue(data["x0"].startswith("data:image/png;base64,"))
                self.assertTrue(data["xt"].startswith("data:image/png;base64,"))
            if name == "done":
                done = data
        self.assertEqual(names[-1], "done", names)
        self.assertIn("started", names)
        self.assertLess(names.index("started"), names.index("step"))
        self.assertEqual(steps, sorted(set(steps)))  # strictly rising
        self.assertEqual(steps[-1], 12)
        self.assertGreaterEqual(len(steps), 2)
        self.assertEqual(done["seed"], 42)
        # The equivalent command line, run as a user would, writes the same bytes.
        out = os.path.join(ROOT, "cli_pngs")
        argv = shlex.split(done["cli"])
        self.assertEqual(argv[0], "ddpm")
        argv = [harness.CLI] + argv[1:]
        argv[argv.index("--png-dir") + 1] = out
        argv[argv.index("-m") + 1] = os.path.join(MODELS, "fashion-mnist.safetensors")
        subprocess.run(argv + ["-q"], check=True)
        for k in range(2):
            status, headers, png = self.s.request("GET", "/v1/generations/%s/images/%d.png" % (job["id"], k))
            self.assertEqual(status, 200)
            self.assertEqual(headers["Content-Type"], "image/png")
            with open(os.path.join(out, "sample_%d.png" % k), "rb") as f:
                self.assertEqual(png, f.read(), "image %d differs from ddpm sample's" % k)
        status, _, grid = self.s.request("GET", "/v1/generations/%s/grid.png" % job["id"])
        self.assertEqual(status, 200)
        self.assertEqual(grid[:8], b"\x89PNG\r\n\x1a\n")

    def test_cancel_a_running_job(self):
        job = self.s.submit(model="fashion-mnist", sampler="ddpm", steps=1000, batch=2)
        asked = False
        for name, data in self.s.events(job["id"]):
            if name == "step" and not asked:
                status, body = self.s.json("POST", "/v1/generations/%s/cancel" % job["id"])
                self.assertEqual(status, 200)
                asked = True
            if name == "cancelled":
                break
        else:
            self.fail("no cancelled event")
        body = self.s.wait_status(job["id"], ["cancelled"])
        self.assertLess(body["step"], 1000)
        status, body = self.s.json("POST", "/v1/generations/%s/cancel" % job["id"])
        self.assertEqual(status, 409)

    def test_a_client_killed_mid_stream_cancels_its_job(self):
        job = self.s.submit(model="fashion-mnist", sampler="ddpm", steps=1000, batch=2)
        reader = subprocess.Popen([sys.executable, "-c", (
            "import http.client,sys\n"
            "c=http.client.HTTPConnection('127.0.0.1',%d)\n"
            "c.request('GET','/v1/generations/%s/events')\n"
            "r=c.getresponse()\n"
            "while True: sys.stdout.write(r.fp.readline().decode()); sys.stdout.flush()\n") % (self.s.port, job["id"])],
            stdout=subprocess.PIPE, text=True)
        while "event: step" not in reader.stdout.readline():
            pass
        reader.send_signal(signal.SIGKILL)
        reader.wait()
        reader.stdout.close()
        body = self.s.wait_status(job["id"], ["cancelled", "done"], timeout=60)
        self.assertEqual(body["status"], "cancelled")
        self.assertIn("left", body["message"])

    def test_queue_order_429_health_and_no_leaks(self):
        threads_before, sockets_before = self.s.threads(), self.s.sockets()
        # Hold the worker with a long job, then 12 submissions at once against a queue of 8.
        hold = self.s.submit(model="fashion-mnist", sampler="ddpm", steps=1000, batch=1, cancel_on_disconnect=False)
        self.s.wait_status(hold["id"], ["running"])
        results = [None] * 12
        barrier = threading.Barrier(12)

        def post(i):
            barrier.wait()
            results[i] = self.s.json("POST", "/v1/generations", {"model": "cond", "steps": 3, "seed": i})

        ts = [threading.Thread(target=post, args=(i,)) for i in range(12)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        codes = sorted(r[0] for r in results)
        self.assertEqual(codes, [202] * 8 + [429] * 4)
        for status, body in results:
            if status == 429:
                self.assertEqual(body["error"]["code"], "queue_full")
        accepted = sorted((b for s, b in results if s == 202), key=lambda b: b["queue_position"])
        self.assertEqual([b["queue_position"] for b in accepted], list(range(1, 9)))
        # Eight streams open at once leave /health answering; a ninth is refused.
        conns = []
        for b in accepted:
            c = self.s.connection()
            c.request("GET", "/v1/generations/%s/events" % b["id"])
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            r.fp.readline()
            conns.append((c, r))
        status, _, _ = self.s.request("GET", "/v1/generations/%s/events" % accepted[0]["id"])
        self.assertEqual(status, 503)
        latencies = []
        for _ in range(20):
            t0 = time.monotonic()
            self.assertEqual(self.s.request("GET", "/health", timeout=5)[0], 200)
            latencies.append(time.monotonic() - t0)
        latencies.sort()
        print("health p95 with 8 streams open: %.1f ms" % (latencies[18] * 1000), file=sys.stderr)
        # Positions never rise while the queue drains, and jobs finish in the order they were queued.
        self.s.json("POST", "/v1/generations/%s/cancel" % hold["id"])
        last = {b["id"]: b["queue_position"] for b in accepted}
        while True:
            _, q = self.s.json("GET", "/v1/queue")
            for j in q["jobs"]:
                if j["id"] in last and j["status"] == "queued":
                    self.assertLessEqual(j["queue_position"], last[j["id"]])
                    last[j["id"]] = j["queue_position"]
            if not q["jobs"]:
                break
            time.sleep(0.01)
        for c, r in conns:
            while r.fp.readline():
                pass
            c.close()
        finished = [self.s.wait_status(b["id"], ["done"]) for b in accepted]
        started = [f["started_at"] for f in finished]
        self.assertEqual(started, sorted(started))  # FIFO
        # Afterwards the server holds no more threads or sockets than before (keep-alive closes within 5 s).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (self.s.threads() > threads_before or self.s.sockets() > sockets_before):
            time.sleep(0.2)
        self.assertLessEqual(self.s.threads(), threads_before)
        self.assertLessEqual(self.s.sockets(), sockets_before)
        # Idle afterwards: no stream handler left spinning (httplib calls a provider forever unless it checks).
        self.assertLess(self.s.cpu_share(3.0), 0.05)

    def test_bad_requests(self):
        big = json.dumps({"model": "cond", "pad": "x" * (1 << 20)})
        cases = [
            ("POST", "/v1/generations", "not json", {"Content-Type": "application/json"}, 400),
            ("POST", "/v1/generations", "[1]", {"Content-Type": "application/json"}, 400),
            ("POST", "/v1/generations", '{"model":"cond","x":1}', {"Content-Type": "application/json"}, 400),
            ("POST", "/v1/generations", big, {"Content-Type": "application/json"}, 413),
            ("POST", "/v1/generations", "{}", {"Content-Type": "text/plain"}, 415),
            ("POST", "/v1/generations", '{"model":"cond","steps":0}', {"Content-Type": "application/json"}, 400),
            ("POST", "/v1/generations", '{"model":"cond","steps":"10"}', {"Content-Type": "application/json"}, 400),
            ("POST", "/v1/generations", '{"model":"cond","steps":10.5}', {"Content-Type": "application/json"}, 400),
            ("POST", "/v1/generations", '{"model":"cond","batch":17}', {"Content-Type": "application/json"}, 400),
            ("POST", "/v1/generations", '{"model":"cond","class":10}', {"Content-Type": "application/json"}, 400),
            ("POST", "/v1/generations", '{"model":"uncond","class":1}', {"Content-Type": "application/json"}, 400),
            ("POST", "/v1/generations", '{"model":"cond","class":1,"guidance":"NaN"}',
             {"Content-Type": "application/json"}, 400),
            ("POST", "/v1/generations", '{"model":"cond","sampler":"ddpm","eta":1}',
             {"Content-Type": "application/json"}, 400),
            ("POST", "/v1/generations", '{"model":"../x"}', {"Content-Type": "application/json"}, 404),
            ("POST", "/v1/generations", '{"model":"/etc/passwd"}', {"Content-Type": "application/json"}, 404),
            ("POST", "/v1/generations", '{"model":"%2e%2e%2fcond"}', {"Content-Type": "application/json"}, 404),
            ("POST", "/v1/generations", '{"model":"co\\u0000nd"}', {"Content-Type": "application/json"}, 404),
            ("GET", "/v1/generations/nope", None, {}, 404),
            ("GET", "/v1/generations/%2e%2e/%2e%2e/etc/passwd", None, {}, 404),
            ("GET", "/../../etc/passwd", None, {}, 404),
            ("GET", "/v1/models", None, {"Host": "evil.com"}, 403),
            ("POST", "/v1/generations", '{"model":"cond"}', {"Content-Type": "application/json",
                                                             "Origin": "http://evil.com"}, 403),
            ("DELETE", "/v1/models", None, {}, 405),
        ]
        for method, path, body, headers, want in cases:
            status, h, data = self.s.request(method, path, body, headers)
            self.assertEqual(status, want, "%s %s %r → %d %r" % (method, path, (body or "")[:60], status, data[:200]))
            self.assertEqual(h.get("Content-Type"), "application/json", path)
            self.assertIn("error", json.loads(data))
            self.assertNotIn("Access-Control-Allow-Origin", h)
        # A client that connects and says nothing is dropped after the read timeout; /health answers meanwhile.
        silent = socket.create_connection(("127.0.0.1", self.s.port))
        self.assertEqual(self.s.request("GET", "/health", timeout=5)[0], 200)
        silent.settimeout(30)
        t0 = time.monotonic()
        self.assertEqual(silent.recv(1), b"")
        self.assertLess(time.monotonic() - t0, 20)
        silent.close()
        self.assertEqual(self.s.request("GET", "/health")[0], 200)


class Keyed(unittest.TestCase):
    def test_the_key_guards_the_api_but_not_the_page(self):
        key = os.path.join(ROOT, "key")
        with open(key, "w") as f:
            f.write("s3cret-key-of-this-test\n")
        s = harness.Server(MODELS, "--api-key-file", key)
        try:
            self.assertEqual(s.request("GET", "/v1/models")[0], 401)
            self.assertEqual(s.request("GET", "/v1/models", headers={"Authorization": "Bearer wrong"})[0], 401)
            self.assertEqual(s.request("GET", "/v1/models",
                                       headers={"Authorization": "Bearer s3cret-key-of-this-test"})[0], 200)
            self.assertEqual(s.request("GET", "/health")[0], 200)
            status, h, page = s.request("GET", "/")
            self.assertEqual(status, 200)
            self.assertIn(b"data-state", page)
            self.assertIn("default-src 'self'", h["Content-Security-Policy"])
        finally:
            self.assertEqual(s.stop(), 0)
        err = subprocess.run([harness.CLI, "serve", "--host", "0.0.0.0", "--models-dir", MODELS],
                             capture_output=True, text=True)
        self.assertNotEqual(err.returncode, 0)
        self.assertIn("--api-key-file", err.stderr)
        self.assertEqual(err.stderr.count("\n"), 1, err.stderr)
        for args, needle in ((["--models-dir", "/nonexistent"], "--models-dir"), (["--port", "70000"], "--port"),
                             (["--max-queue", "0"], "--max-queue"), (["--api-key-file", "/nonexistent"], "/nonexistent")):
            err = subprocess.run([harness.CLI, "serve", "--models-dir", MODELS] + args, capture_output=True, text=True)
            self.assertNotEqual(err.returncode, 0, args)
            self.assertIn(needle, err.stderr)
            self.assertTrue(err.stderr.startswith("ddpm: error: "), err.stderr)
            self.assertEqual(err.stderr.count("\n"), 1, err.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
