// The page of `ddpm serve`: settings in the query string, one job at a time, its events read from a fetch stream.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], classifiers: [], samplers: [], limits: {}, job: null, abort: null, snapshots: 0, image: null };
const SNAPSHOTS = 10;

function setState(s, step) {
  document.body.dataset.state = s;
  if (step !== undefined) document.body.dataset.step = String(step);
  const busy = s === "queued" || s === "running";
  $("generate").disabled = busy;
  $("cancel").disabled = !busy;
}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = $("key").value || localStorage.getItem("ddpm-key") || "";
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: headers(options.body !== undefined) });
  if (res.status === 401) {
    $("key-label").hidden = false;
    throw new Error("this server needs an API key: enter it and try again");
  }
  const body = res.headers.get("Content-Type") === "application/json" ? await res.json() : null;
  if (!res.ok) throw new Error(body && body.error ? body.error.message : "HTTP " + res.status);
  return body;
}

function status(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function option(select, value, label) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label;
  select.appendChild(o);
}

function currentModel() { return state.models.find((m) => m.id === $("model").value); }

function currentClassifier() { return state.classifiers.find((c) => c.id === $("classifier").value); }

function refreshControls() {
  const m = currentModel();
  // Classifier guidance: the model's noisy classifiers, if the folder has any.
  const clf = $("classifier");
  const keepClf = clf.value;
  clf.innerHTML = "";
  option(clf, "", "none");
  for (const id of (m && m.classifiers) || []) option(clf, id, id);
  if ([...clf.options].some((o) => o.value === keepClf)) clf.value = keepClf;
  $("classifier-label").hidden = clf.options.length < 2;
  const k = currentClassifier();
  $("scale-label").hidden = !k;
  // Classes: the model's, or the classifier's when one guides it.
  const names = k ? k.class_names : m && m.num_classes > 0 ? m.class_names : [];
  const cls = $("class");
  const keep = cls.value;
  cls.innerHTML = "";
  const mode = $("mode").value;
  if (names.length > 0) {
    if (mode === "noise") option(cls, "all", "all classes (a column each)");
    names.forEach((name, j) => option(cls, String(j), j + ": " + name));
    cls.disabled = false;
    if ([...cls.options].some((o) => o.value === keep)) cls.value = keep;
  } else {
    option(cls, "", "— (unconditional)");
    cls.disabled = true;
  }
  $("guidance").disabled = !(m && m.guidance) || !!k;
  // Starting from an image: SDEdit takes a strength, RePaint a region and runs DDPM's steps.
  const image = m && m.item_shape.length === 3;
  $("mode").disabled = !image;
  if (!image) $("mode").value = "noise";
  $("image-label").hidden = $("mode").value === "noise";
  $("strength-label").hidden = $("mode").value !== "edit";
  $("region-label").hidden = $("resample-label").hidden = $("mode").value !== "inpaint";
  if ($("mode").value === "inpaint") $("sampler").value = "ddpm";
  $("sampler").disabled = $("mode").value === "inpaint";
  $("eta-label").hidden = $("sampler").value !== "ddim";
  if (m) $("steps").max = String(Math.min(m.timesteps, state.limits.max_steps || m.timesteps));
  $("batch").max = String(state.limits.max_batch || 16);
  drawInput();
}

// The chosen picture drawn at the model's size (grey for a one-channel model); sent as a PNG data URL.
function drawInput() {
  const m = currentModel();
  const show = !!(state.image && m && m.item_shape.length === 3 && $("mode").value !== "noise");
  $("input-section").hidden = !show;
  if (!show) return;
  const [c, h, w] = m.item_shape;
  const canvas = $("input-canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "black";
  ctx.fillRect(0, 0, w, h);
  ctx.drawImage(state.image, 0, 0, w, h);
  if (c === 1) {
    const px = ctx.getImageData(0, 0, w, h);
    for (let i = 0; i < px.data.length; i += 4) {
      const y = Math.round(0.299 * px.data[i] + 0.587 * px.data[i + 1] + 0.114 * px.data[i + 2]);
      px.data[i] = px.data[i + 1] = px.data[i + 2] = y;
      px.data[i + 3] = 255;
    }
    ctx.putImageData(px, 0, 0);
  }
  state.imageUrl = canvas.toDataURL("image/png");
  $("input-caption").textContent = "your image, as the model sees it" +
      ($("mode").value === "inpaint" ? " (the part to fill in is dimmed)" : "");
  canvas.style.width = w * Math.max(1, Math.floor(160 / w)) + "px";
  if ($("mode").value === "inpaint") {
    // Dim the part RePaint will fill in (the request sends the undimmed image and the region's name).
    const r = $("region").value;
    const box = { right: [w / 2, 0, w - w / 2, h], left: [0, 0, w / 2, h], top: [0, 0, w, h / 2],
                  bottom: [0, h / 2, w, h - h / 2], centre: [w / 4, h / 4, w / 2, h / 2] }[r].map(Math.floor);
    ctx.fillStyle = "rgba(128, 128, 128, 0.7)";
    ctx.fillRect(...box);
  }
}

function loadImage(file) {
  if (!file) return;
  // Read as a data: URL: the page's Content-Security-Policy allows data: images and not blob: ones.
  const bad = () => status("That file is not an image the browser can read.", true);
  const reader = new FileReader();
  reader.onerror = bad;
  reader.onload = () => {
    const img = new Image();
    img.onload = () => { state.image = img; drawInput(); };
    img.onerror = bad;
    img.src = reader.result;
  };
  reader.readAsDataURL(file);
}

const FIELDS = ["model", "classifier", "classifier_scale", "mode", "strength", "region", "resample", "class", "guidance",
                "sampler", "steps", "eta", "seed", "batch"];

function readQuery() {
  const q = new URLSearchParams(location.search);
  for (const f of FIELDS) if (q.has(f)) $(f).value = q.get(f);
  return q;
}

function writeQuery() {
  const q = new URLSearchParams();
  for (const f of FIELDS) if (!$(f).disabled && !($(f).closest("label") || {}).hidden) q.set(f, $(f).value);
  history.replaceState(null, "", "?" + q.toString());
}

function request() {
  const body = { model: $("model").value, sampler: $("sampler").value, steps: Number($("steps").value),
                 seed: Number($("seed").value), batch: Number($("batch").value) };
  if (!$("class").disabled && $("class").value !== "") body.class = $("class").value === "all" ? "all" : Number($("class").value);
  if (!$("guidance").disabled && Number($("guidance").value) !== 0) body.guidance = Number($("guidance").value);
  if (body.sampler === "ddim") body.eta = Number($("eta").value);
  if (currentClassifier()) {
    body.classifier = $("classifier").value;
    body.classifier_scale = Number($("classifier_scale").value);
  }
  const mode = $("mode").value;
  if (mode !== "noise") {
    if (!state.image) throw new Error("choose an image to start from");
    body.image = state.imageUrl;
    if (mode === "edit") body.strength = Number($("strength").value);
    if (mode === "inpaint") {
      body.region = $("region").value;
      body.resample = Number($("resample").value);
    }
  }
  return body;
}

// Native-size images drawn larger, pixelated: as large as fits `room` pixels, by a whole factor.
function zoom(img, room) {
  const fit = () => {
    const k = Math.max(1, Math.min(8, Math.floor(room / Math.max(1, img.naturalWidth))));
    img.style.width = img.naturalWidth * k + "px";
  };
  if (img.complete && img.naturalWidth) fit();
  else img.addEventListener("load", fit, { once: true });
}
for (const [id, room] of [["xt", 520], ["x0", 520], ["grid", 700]]) $(id).addEventListener("load", () => zoom($(id), room));

function addSnapshot(src, step, t) {
  const f = document.createElement("figure");
  const img = document.createElement("img");
  img.src = src;
  img.alt = "x̂0 at step " + step;
  zoom(img, 100);
  const c = document.createElement("figcaption");
  c.textContent = "t = " + t;
  f.append(img, c);
  $("strip").appendChild(f);
}

function onEvent(name, data) {
  if (name === "queued") {
    setState("queued");
    status("Queued: position " + data.position + ".");
  } else if (name === "started") {
    setState("running", 0);
    state.steps = data.steps;
    $("progress").max = data.steps;
    status("Running: " + data.steps + " steps of " + data.items + " item(s).");
  } else if (name === "step") {
    setState("running", data.step);
    $("progress").max = data.of;
    $("progress").value = data.step;
    if (data.xt) $("xt").src = data.xt;
    if (data.x0) $("x0").src = data.x0;
    // Ten snapshots spread over the run (a slow connection skips frames: take the first one past each mark).
    while (state.snapshots < SNAPSHOTS && data.step >= Math.ceil(((state.snapshots + 1) * data.of) / SNAPSHOTS)) {
      state.snapshots++;
      if (data.x0) addSnapshot(data.x0, data.step, data.t);
    }
    const eta = data.eta_ms >= 1000 ? (data.eta_ms / 1000).toFixed(1) + " s" : data.eta_ms + " ms";
    status("Step " + data.step + " / " + data.of + " · t = " + data.t + " · about " + eta + " left");
  } else if (name === "done") {
    $("grid").src = data.grid;
    $("download").href = data.grid;
    $("result-seed").textContent = String(data.seed);
    $("cli").textContent = data.cli;
    $("result").hidden = false;
    $("progress").value = $("progress").max;
    status("Done in " + data.seconds.toFixed(1) + " s.");
    setState("done");
  } else if (name === "failed") {
    status("Failed: " + data.message, true);
    setState("error");
  } else if (name === "cancelled") {
    status("Cancelled: " + data.reason + ".");
    setState("cancelled");
  }
}

async function follow(id) {
  const abort = new AbortController();
  state.abort = abort;
  const res = await fetch("/v1/generations/" + id + "/events", { headers: headers(false), signal: abort.signal });
  if (!res.ok) throw new Error("the event stream answered HTTP " + res.status);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
  state.abort = null;
}

async function generate(event) {
  if (event) event.preventDefault();
  writeQuery();
  $("strip").innerHTML = "";
  $("result").hidden = true;
  $("xt").removeAttribute("src");
  $("x0").removeAttribute("src");
  $("progress").value = 0;
  state.snapshots = 0;
  if ($("key").value) localStorage.setItem("ddpm-key", $("key").value);
  try {
    const body = request();
    setState("queued", 0);
    status("Submitting…");
    const job = await api("/v1/generations", { method: "POST", body: JSON.stringify(body) });
    state.job = job.id;
    document.body.dataset.job = job.id;
    status("Queued: position " + job.queue_position + ".");
    await follow(job.id);
  } catch (e) {
    if (e.name === "AbortError") return;
    status(e.message, true);
    setState("error");
  }
}

async function cancel() {
  if (!state.job) return;
  try {
    await api("/v1/generations/" + state.job + "/cancel", { method: "POST", body: "{}" });
  } catch (e) {
    status(e.message, true);
  }
}

async function start() {
  try {
    const [models, caps] = await Promise.all([api("/v1/models"), api("/v1/capabilities")]);
    state.models = models.models;
    state.classifiers = models.classifiers || [];
    state.samplers = caps.samplers;
    state.limits = caps.limits;
    if (caps.api_key) $("key-label").hidden = false;
    for (const m of state.models) option($("model"), m.id, m.id + " (step " + m.step + ")");
    for (const s of state.samplers) option($("sampler"), s.name, s.name);
    $("sampler").value = "ddim";
    // Each pass fills the options the next field of the query needs (model → classifier → classes).
    let q;
    for (let pass = 0; pass < 3; ++pass) {
      refreshControls();
      q = readQuery();
    }
    refreshControls();
    if (state.models.length === 0) status("This server has no models: start it with --models-dir DIR.", true);
    $("health").textContent = state.models.length + " model(s)";
    if (q.get("autorun") === "1" && state.models.length > 0) generate();
  } catch (e) {
    status(e.message, true);
    setState("error");
  }
}

$("controls").addEventListener("submit", generate);
$("cancel").addEventListener("click", cancel);
$("dice").addEventListener("click", () => { $("seed").value = String(Math.floor(Math.random() * 2 ** 31)); writeQuery(); });
$("model").addEventListener("change", () => { refreshControls(); writeQuery(); });
$("sampler").addEventListener("change", () => {
  const s = $("sampler").value;
  $("steps").value = s === "ddpm" ? String(Math.min(1000, Number($("steps").max))) : s === "dpm++" ? "20" : "50";
  refreshControls();
  writeQuery();
});
for (const f of ["class", "guidance", "steps", "eta", "seed", "batch", "classifier_scale", "strength", "resample"])
  $(f).addEventListener("change", writeQuery);
for (const f of ["classifier", "mode", "region"]) $(f).addEventListener("change", () => { refreshControls(); writeQuery(); });
$("mode").addEventListener("change", () => {
  if ($("mode").value === "inpaint") $("steps").value = String(Math.min(100, Number($("steps").max)));
});
$("image").addEventListener("change", () => loadImage($("image").files[0]));
$("copy").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("cli").textContent);
    $("copy").textContent = "Copied";
  } catch (e) {
    const r = document.createRange();
    r.selectNodeContents($("cli"));
    getSelection().removeAllRanges();
    getSelection().addRange(r);
  }
});
start();
