"""Test harness of `ddpm serve` (Python standard library only): start the real binary on loopback with port 0,
read the port it prints, wait for /health, talk HTTP and Server-Sent Events to it, stop it with SIGTERM."""
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

CLI = os.environ.get("DDPM_CLI", "ddpm")
SHIPPED = os.environ.get("DDPM_MODELS", "models")


def make_models(root):
    """A models folder: two tiny U-Nets trained for 3 steps ('cond' with classes, 'uncond'), a noisy classifier
    for both ('guide') and the shipped Fashion-MNIST model ('fashion-mnist'), whose steps take long enough to watch
    and to cancel, with its noise-aware classifier ('fashion-mnist-noisy-classifier') when it is there."""
    net = ["--data", "fashion-mnist", "--data-size", "64", "--steps", "3", "--batch", "4", "--sample-every", "0",
           "--channels", "8", "--channel-mult", "1,2", "--attention", "16", "--res-blocks", "1", "--groups", "4",
           "--timesteps", "100"]
    models = os.path.join(root, "models")
    os.makedirs(models, exist_ok=True)
    for name, extra in (("cond", ["--conditional", "--label-dropout", "0.1"]), ("uncond", [])):
        run = os.path.join(root, "runs", name)
        subprocess.run([CLI, "--threads", "1", "train", "-q", *net, *extra, "--out", run], check=True)
        shutil.copy(os.path.join(run, "checkpoint.safetensors"), os.path.join(models, name + ".safetensors"))
    # A noise-aware classifier of the tiny models' process, for classifier guidance ('guide').
    subprocess.run([CLI, "--threads", "1", "classifier", "train", "-q", "--noisy", "--like",
                    os.path.join(models, "cond.safetensors"), "--steps", "3", "--batch", "4", "--width", "8",
                    "--channel-mult", "1,2", "--test", "", "-o", os.path.join(models, "guide.safetensors")], check=True)
    shutil.copy(os.path.join(SHIPPED, "fashion-mnist.safetensors"), models)
    noisy = os.path.join(SHIPPED, "fashion-mnist-noisy-classifier.safetensors")
    if os.path.exists(noisy):  # the shipped model's own noise-aware classifier
        shutil.copy(noisy, models)
    return models


class Server:
    def __init__(self, models, *args):
        self.proc = subprocess.Popen([CLI, "--threads", "1", "serve", "--port", "0", "--models-dir", models, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on http://"):
            self.proc.kill()
            raise RuntimeError("ddpm serve did not start: %r %s" % (line, self.proc.stderr.read()))
        self.host, port = line[len("listening on http://"):].rsplit(":", 1)
        self.port = int(port)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("ddpm serve exited: " + self.proc.stderr.read())
            try:
                if self.request("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("ddpm serve never answered /health")
            time.sleep(0.05)

    def connection(self, timeout=30):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=30):
        """(status, headers, body bytes); a dict or list body is sent as JSON."""
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        c = self.connection(timeout)
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def json(self, method, path, body=None, headers=None):
        status, _, data = self.request(method, path, body, headers)
        return status, json.loads(data) if data else None

    def submit(self, **params):
        status, body = self.json("POST", "/v1/generations", params)
        if status != 202:
            raise AssertionError("submission refused: %d %s" % (status, body))
        return body

    def events(self, job_id, headers=None):
        """Yields (name, data) of the job's event stream until it ends."""
        c = self.connection(60)
        c.request("GET", "/v1/generations/%s/events" % job_id, headers=headers or {})
        r = c.getresponse()
        if r.status != 200:
            raise AssertionError("events answered %d %s" % (r.status, r.read()))
        assert r.getheader("Content-Type") == "text/event-stream", r.getheader("Content-Type")
        name, data = None, ""
        try:
            while True:
                line = r.fp.readline()
                if not line:
                    return
                line = line.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data += line[6:]
                elif line == "" and name:
                    yield name, json.loads(data)
                    name, data = None, ""
        finally:
            c.close()

    def wait_status(self, job_id, wanted, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, body = self.json("GET", "/v1/generations/" + job_id)
            if body["status"] in wanted:
                return body
            time.sleep(0.05)
        raise AssertionError("job %s never reached %s (last %s)" % (job_id, wanted, body["status"]))

    def threads(self):
        return len(os.listdir("/proc/%d/task" % self.proc.pid))

    def sockets(self):
        n = 0
        for fd in os.listdir("/proc/%d/fd" % self.proc.pid):
            try:
                n += os.readlink("/proc/%d/fd/%s" % (self.proc.pid, fd)).startswith("socket:")
            except OSError:
                pass
        return n

    def cpu_share(self, seconds):
        """CPU time the server used over `seconds` of wall time, as a share of one core."""
        def ticks():
            with open("/proc/%d/stat" % self.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        t0, c0 = time.monotonic(), ticks()
        time.sleep(seconds)
        return (ticks() - c0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)

    def stop(self):
        """SIGTERM, SIGKILL after 10 s; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode


def temp_root():
    return tempfile.mkdtemp(prefix="ddpm_serve_test_")
