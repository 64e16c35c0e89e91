/* cnnlab explain: start-up, the header, selection, uploads and the run's example images. */
"use strict";

window.CX = CX;  // for the console, and for tests

CX.message = function (text, kind = "error") {
  const box = document.getElementById("message");
  box.hidden = !text;
  box.className = "message " + kind;
  box.textContent = text || "";
};

CX.renderHeader = function () {
  const P = CX.payload, M = P.model;
  const metric = M.metric && Object.entries(M.metric).map(([k, v]) => `${k} ${typeof v === "number" ? v.toFixed(3) : v}`).join(", ");
  document.getElementById("model-info").replaceChildren(
    CX.el("b", {}, M.name), CX.config.run ? ` · run ${CX.config.run}` : "",
    ` · input ${M.input.join("×")} · ${CX.plural(M.total_params, "parameter")}`,
    M.epoch ? ` · epoch ${M.epoch}` : "", metric ? ` · ${metric}` : "");
  document.getElementById("input-image").src = P.image.png;
  document.getElementById("image-name").textContent = P.image.name;
  const pred = document.getElementById("prediction");
  pred.dataset.class = P.prediction.class;
  pred.dataset.index = P.prediction.index;
  pred.replaceChildren("prediction: ", CX.el("b", {}, P.prediction.class),
    ` ${(P.prediction.probability * 100).toFixed(1)}%`);
};

/** Select a neuron: highlight it in the overview and show its arithmetic. */
CX.select = function (sel) {
  CX.sel = sel;
  CX.highlight(sel);
  const panel = document.getElementById("detail");
  try {
    panel.replaceChildren(...CX.detail(sel));
  } catch (err) {
    panel.replaceChildren(CX.el("p", { class: "message error" }, `Cannot explain this neuron: ${err.message}`));
    throw err;
  }
  panel.dataset.li = sel.li;
  panel.dataset.kind = sel.li < CX.payload.layers.length ? CX.layer(sel.li).kind : "output";
  const hint = CX.el("p", { class: "hint" }, "Arrow keys move to the neighbouring neuron.");
  if (sel.unit === undefined) panel.append(hint);
};

/** Keep a selection meaningful for a new image (same layer and place), or pick a default. */
CX.defaultSelection = function (old) {
  const layers = CX.payload.layers;
  if (old && old.li <= layers.length) return old;
  const li = layers.findIndex((L) => L.kind === "conv");
  if (li < 0) return { li: layers.length, unit: CX.payload.prediction.index };
  const [, H, W] = layers[li].out.shape;
  return { li, ch: 0, y: Math.floor(H / 2), x: Math.floor(W / 2) };
};

/** Show a new payload (after an upload or a pick): everything is redrawn. */
CX.load = async function (payload) {
  CX.payload = payload;
  CX.floats = await CX.decodeBlob(payload.blob);
  CX.renderHeader();
  CX.renderOverview();
  CX.select(CX.defaultSelection(CX.sel));
  const pg = document.getElementById("playground");
  if (!pg.childElementCount) CX.renderPlayground();
  const lab = document.getElementById("kernellab");
  if (!lab.childElementCount) await CX.renderKernelLab(lab, CX.config.kernelLab, true);
  await CX.klExplainerImage(payload.image.png, payload.image.name);
  document.body.dataset.ready = "1";
  document.body.dataset.loads = String(Number(document.body.dataset.loads || 0) + 1);
};

/* ---- serve mode: uploads and examples -------------------------------------------- */

CX.post = async function (url, options) {
  CX.message("computing…", "info");
  try {
    const res = await fetch(url, options);
    const body = await res.json().catch(() => ({ detail: `the server answered ${res.status}` }));
    if (!res.ok) {
      CX.message(body.detail || `the server answered ${res.status}`);
      return;
    }
    await CX.load(body);
    CX.message("");
  } catch (err) {
    CX.message(`cannot reach the cnnlab server (${err.message}); is \`cnnlab explain --serve\` still running?`);
  }
};

CX.upload = function (file) {
  if (!file) return;
  if (file.size > CX.config.maxUploadMB * 1024 * 1024) {
    CX.message(`${file.name} is larger than ${CX.config.maxUploadMB} MB; choose a smaller image.`);
    return;
  }
  const form = new FormData();
  form.append("file", file, file.name);
  return CX.post("api/explain", { method: "POST", body: form });
};

CX.renderServeControls = function () {
  const up = document.getElementById("upload");
  up.hidden = false;
  document.getElementById("file").addEventListener("change", (ev) => CX.upload(ev.target.files[0]));
  document.addEventListener("dragover", (ev) => ev.preventDefault());
  document.addEventListener("drop", (ev) => {
    ev.preventDefault();
    CX.upload(ev.dataTransfer.files[0]);
  });
  const ex = CX.config.examples;
  if (!ex.length) return;
  const box = document.getElementById("examples");
  box.hidden = false;
  box.replaceChildren(CX.el("span", { class: "hint" }, `${ex[0].split} images:`),
    ...ex.map((e) => CX.el("button", { class: "example", title: `${e.name} (${e.label})`, dataset: { id: e.id },
      onclick: () => CX.post(`api/example/${e.id}`, { method: "GET" }) },
    CX.el("img", { src: e.png, alt: e.name }), CX.el("span", {}, e.label))));
};

/* ---- keyboard: arrows move the selection --------------------------------------------- */

CX.onKey = function (ev) {
  const s = CX.sel;
  if (!s || s.unit !== undefined || ev.target.closest("input, select, textarea, .kernellab")) return;
  const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
  if (!(ev.key in moves)) return;
  const [, H, W] = CX.layer(s.li).out.shape, [dy, dx] = moves[ev.key];
  ev.preventDefault();
  CX.select({ ...s, y: Math.min(H - 1, Math.max(0, s.y + dy)), x: Math.min(W - 1, Math.max(0, s.x + dx)) });
};

/* ---- start ---------------------------------------------------------------------------- */

CX.start = async function () {
  CX.config = JSON.parse(document.getElementById("cnnlab-config").textContent);
  const payload = JSON.parse(document.getElementById("cnnlab-payload").textContent);
  document.querySelectorAll("nav.tabs button").forEach((b) => b.addEventListener("click", () => {
    document.querySelectorAll("nav.tabs button").forEach((o) => o.classList.toggle("active", o === b));
    for (const tab of ["network", "playground", "kernellab"]) {
      document.getElementById(`tab-${tab}`).hidden = b.dataset.tab !== tab;
    }
    if (b.dataset.tab === "kernellab" && CX.KL.res) CX.klMark();  // the photo has its size only once shown
  }));
  document.getElementById("scale").addEventListener("change", (ev) => {
    CX.scaleMode = ev.target.value;
    CX.renderOverview();
    CX.highlight(CX.sel);
  });
  document.addEventListener("keydown", CX.onKey);
  if (CX.config.mode === "serve") CX.renderServeControls();
  try {
    await CX.load(payload);
  } catch (err) {
    CX.message(`This page could not read its data (${err.message}). It needs a recent browser ` +
      "(Chrome/Edge 80+, Firefox 113+, Safari 16.4+).");
    throw err;
  }
};

document.addEventListener("DOMContentLoaded", CX.start);
