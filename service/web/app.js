// mrdserve's page: upload raw data, reconstruct it as asynchronous jobs (the chosen model and, beside it, the
// classical method), watch the jobs, view the slices with window/level, download DICOM or NIfTI. Plain
// JavaScript with no dependency: the PNG results (a zip) are unpacked with the browser's DecompressionStream.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 400;
const state = { file: null, panels: [], slice: 0 };

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (!response.ok) {
    let message = response.statusText;
    try {
      message = (await response.json()).message || message;
    } catch (_) { /* not JSON */ }
    throw new Error(`${response.status} ${message}`);
  }
  return response;
}

function fillSelect(select, values) {
  select.replaceChildren(...values.map((value) => new Option(value, value)));
}

async function loadChoices() {
  try {
    const choices = await (await api("/v1/choices")).json();
    fillSelect($("artifact"), choices.artifacts);
    fillSelect($("method"), choices.methods);
    showError("");
  } catch (error) {
    showError(`Could not list the models (${error.message}); enter the API key if the server needs one.`);
  }
}

function chooseFile(file) {
  state.file = file || null;
  $("file-name").textContent = file ? `${file.name} (${(file.size / 1048576).toFixed(1)} MiB)` : "no file yet";
  $("run").disabled = !file;
}

// ----------------------------------------------------------------------------------------------- jobs
async function submitJob(format, artifact, method) {
  const form = new FormData();
  form.append("file", state.file);
  const query = new URLSearchParams({ mode: "async", format });
  if (artifact !== "auto") query.set("artifact", artifact);
  if (method !== "auto") query.set("method", method);
  const response = await api(`/v1/reconstructions?${query}`, { method: "POST", body: form });
  return (await response.json()).id;
}

async function waitForJob(id, onState) {
  for (;;) {
    const job = await (await api(`/v1/reconstructions/${id}`)).json();
    onState(job);
    if (job.state === "succeeded") return job;
    if (job.state === "failed") throw new Error(job.error || "the job failed");
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function jobResult(id) {
  return (await api(`/v1/reconstructions/${id}/result`)).blob();
}

function jobLine(title) {
  const item = document.createElement("li");
  item.textContent = `${title}: submitting`;
  $("jobs").append(item);
  return (job) => {
    item.dataset.state = job.state;
    const done = job.state === "succeeded" ? ` (${job.slices} slice(s))` : "";
    item.textContent = `${title}: ${job.state}${done}${job.error ? ` - ${job.error}` : ""}`;
  };
}

// ----------------------------------------------------------------------------------------------- zip
async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function unzip(blob) {
  const buffer = new Uint8Array(await blob.arrayBuffer());
  const view = new DataView(buffer.buffer);
  let end = buffer.length - 22;
  while (end >= 0 && view.getUint32(end, true) !== 0x06054b50) end -= 1;
  if (end < 0) throw new Error("the result is not a zip file");
  const count = view.getUint16(end + 10, true);
  let entry = view.getUint32(end + 16, true);
  const files = [];
  for (let i = 0; i < count; i += 1) {
    const method = view.getUint16(entry + 10, true);
    const size = view.getUint32(entry + 20, true);
    const nameLength = view.getUint16(entry + 28, true);
    const skip = nameLength + view.getUint16(entry + 30, true) + view.getUint16(entry + 32, true);
    const name = new TextDecoder().decode(buffer.subarray(entry + 46, entry + 46 + nameLength));
    const local = view.getUint32(entry + 42, true);
    const start = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    const raw = buffer.subarray(start, start + size);
    files.push({ name, data: method === 8 ? await inflate(raw) : raw });
    entry += 46 + skip;
  }
  return files.sort((a, b) => a.name.localeCompare(b.name));
}

// ----------------------------------------------------------------------------------------------- view
async function grey(pngBytes) {
  const bitmap = await createImageBitmap(new Blob([pngBytes], { type: "image/png" }));
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const values = new Uint8Array(bitmap.width * bitmap.height);
  for (let i = 0; i < values.length; i += 1) values[i] = rgba[4 * i];
  return { width: bitmap.width, height: bitmap.height, values };
}

function draw() {
  const level = Number($("level").value);
  const width = Number($("window").value);
  const low = level - width / 2;
  for (const panel of state.panels) {
    const image = panel.images[Math.min(state.slice, panel.images.length - 1)];
    const canvas = panel.canvas;
    canvas.width = image.width;
    canvas.height = image.height;
    const context = canvas.getContext("2d");
    const out = context.createImageData(image.width, image.height);
    for (let i = 0; i < image.values.length; i += 1) {
      const v = Math.max(0, Math.min(255, Math.round(((image.values[i] - low) * 255) / width)));
      out.data[4 * i] = out.data[4 * i + 1] = out.data[4 * i + 2] = v;
      out.data[4 * i + 3] = 255;
    }
    context.putImageData(out, 0, 0);
  }
  $("slice-number").textContent = String(state.slice + 1);
}

function describe(job) {
  const summary = job.summary || {};
  const labels = (summary.labels || []).join(", ");
  const fallback = (summary.fallback || []).length ? ` (fallback: ${summary.fallback.join("; ")})` : "";
  const times = Object.entries({ ...(summary.request_ms || {}), ...(summary.per_slice_ms || {}) })
    .map(([stage, ms]) => `${stage} ${ms} ms`).join(" · ");
  return { made: `${labels}${fallback}`, times };
}

async function addPanel(title, job, blob) {
  const files = (await unzip(blob)).filter((file) => file.name.endsWith(".png"));
  const images = await Promise.all(files.map((file) => grey(file.data)));
  const section = document.createElement("div");
  section.className = "panel";
  const heading = document.createElement("p");
  const { made, times } = describe(job);
  heading.textContent = `${title}: ${made}`;
  const canvas = document.createElement("canvas");
  canvas.dataset.slices = String(images.length);
  const timing = document.createElement("p");
  timing.className = "timings";
  timing.textContent = times;
  section.append(heading, canvas, timing);
  $("panels").append(section);
  state.panels.push({ images, canvas });
  $("slice").max = String(Math.max(...state.panels.map((p) => p.images.length)) - 1);
}

// ----------------------------------------------------------------------------------------------- actions
async function reconstruct() {
  showError("");
  $("run").disabled = true;
  $("jobs").replaceChildren();
  $("panels").replaceChildren();
  state.panels = [];
  state.slice = 0;
  $("slice").value = "0";
  $("progress").hidden = false;
  $("view").hidden = true;
  const artifact = $("artifact").value;
  const method = $("method").value;
  const runs = [{ title: artifact === "auto" ? "automatic choice" : artifact, artifact }];
  if ($("compare").checked && artifact !== "classical") runs.push({ title: "classical", artifact: "classical" });
  try {
    const jobs = await Promise.all(runs.map(async (run) => {
      const onState = jobLine(run.title);
      const id = await submitJob("png", run.artifact, method);
      const job = await waitForJob(id, onState);
      return { run, job, blob: await jobResult(id) };
    }));
    for (const { run, job, blob } of jobs) await addPanel(run.title, job, blob);
    $("view").hidden = false;
    draw();
  } catch (error) {
    showError(`Reconstruction failed: ${error.message}`);
  } finally {
    $("run").disabled = !state.file;
  }
}

async function download(format) {
  const status = $("download-state");
  status.textContent = `${format}: reconstructing`;
  delete status.dataset.bytes;
  try {
    const id = await submitJob(format, $("artifact").value, $("method").value);
    const job = await waitForJob(id, (j) => { status.textContent = `${format}: ${j.state}`; });
    const blob = await jobResult(id);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = job.filename || `images-${format}`;
    document.body.append(link);
    link.click();
    link.remove();
    status.textContent = `${format}: ${link.download} (${blob.size} bytes)`;
    status.dataset.bytes = String(blob.size);
    status.dataset.filename = link.download;
  } catch (error) {
    status.textContent = "";
    showError(`Download failed: ${error.message}`);
  }
}

function resetWindow() {
  $("level").value = "128";
  $("window").value = "255";
  draw();
}

// ----------------------------------------------------------------------------------------------- wiring
$("file").addEventListener("change", (event) => chooseFile(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  chooseFile(event.dataTransfer.files[0]);
});
$("run").addEventListener("click", reconstruct);
$("slice").addEventListener("input", (event) => { state.slice = Number(event.target.value); draw(); });
$("level").addEventListener("input", draw);
$("window").addEventListener("input", draw);
$("reset-window").addEventListener("click", resetWindow);
$("download-dicom").addEventListener("click", () => download("dicom"));
$("download-nifti").addEventListener("click", () => download("nifti"));
$("api-key").addEventListener("change", loadChoices);
loadChoices();
