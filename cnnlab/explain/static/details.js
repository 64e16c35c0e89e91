/* cnnlab explain: the arithmetic of one neuron, recomputed here from the embedded numbers.
 *
 * Every panel redoes the layer's computation in JavaScript from the layer's input (the
 * previous layer's output) and its weights, shows each step with the numbers, and checks
 * the result against the value the model itself computed (torch, in the payload). The
 * check mark is the proof that the arithmetic shown is the arithmetic the network does.
 */
"use strict";

CX.FIRST_CHANNEL_ROWS = 6;  // conv: input channels shown in full before "show all"
CX.showAllChannels = false;

/** The layer's input: the previous layer's output. */
CX.inputOf = (li) => CX.layer(li - 1);

/** A small table of numbers; cells coloured on the grid's own scale. */
CX.grid = function (values, opts = {}) {
  const { digits = 3, pad = null, mark = null, cls = "" } = opts;
  let m = 0;
  values.forEach((row, i) => row.forEach((v, j) => {
    if (!(pad && pad[i][j]) && isFinite(v)) m = Math.max(m, Math.abs(v));
  }));
  return CX.el("table", { class: "grid " + cls }, CX.el("tbody", {}, values.map((row, i) =>
    CX.el("tr", {}, row.map((v, j) => {
      const isPad = pad && pad[i][j];
      const style = isPad ? {} : { background: CX.colour(v, m), color: CX.ink(v, m) };
      return CX.el("td", { class: (isPad ? "pad" : "") + (mark && mark[0] === i && mark[1] === j ? " best" : ""),
        title: isPad ? "padding" : CX.exact(v), style }, isPad && !isFinite(v) ? "·" : CX.fmt(v, digits));
    })))));
};

/** A heat map of one channel with a box drawn on it, for the panels. */
CX.miniMap = function (li, c, box, size = 64) {
  const L = CX.layer(li), [, H, W] = L.out.shape;
  const canvas = CX.el("canvas", { style: { width: `${size}px`, height: `${size * H / W}px` } });
  if (L.kind === "input") {
    CX.paint(canvas, L.out, c, CX.inputRange || (CX.inputRange = CX.range(L.out)), L.channel_names[c]);
  } else {
    CX.paint(canvas, L.out, c, CX.scaleOf(li, c));
  }
  const map = CX.el("div", { class: "map mini", title: `${L.name}, channel ${c}` }, canvas);
  if (box) CX.box(map, H, W, box.y0, box.x0, box.h, box.w, box.cls || "patch");
  return map;
};

/** The verdict line: the page's result against the model's own value. */
CX.check = function (mine, model, what = "the model's own value") {
  const ok = CX.close(mine, model);
  return CX.el("div", { class: "check " + (ok ? "ok" : "bad"), "data-role": "check", "data-ok": ok ? "1" : "0" },
    ok ? "✓ " : "✗ ", `equals ${what}: `, CX.num(model, "model-value"),
    ok ? "" : " (differs: please report this)");
};

CX.act = function (name, x) {
  if (!name) return x;
  const f = CX.ACTIVATIONS[name];
  if (!f) throw new Error(`unknown activation ${name}`);
  return f(x);
};

CX.channelName = function (li, c) {
  const L = CX.layer(li);
  return L.channel_names ? `${L.channel_names[c]} channel` : `channel ${c}`;
};

CX.title = (...parts) => CX.el("h2", {}, ...parts);
CX.para = (...parts) => CX.el("p", { class: "explain" }, ...parts);

/* ---- Conv2D -------------------------------------------------------------------------- */

/** The numbers of one conv neuron, as the layer computes them. */
CX.convNumbers = function (li, k, y, x) {
  const L = CX.layer(li), In = CX.inputOf(li).out, K = L.conv.kernel;
  const [, Hi, Wi] = In.shape, [, cin, kh, kw] = K.shape, [dh, dw] = L.conv.dilation;
  const win = CX.window(L, y, x);
  const rows = CX.inputChannels(L, k).map((c, ci) => {
    const patch = [], kernel = [], prod = [], pad = [];
    let sum = 0;
    for (let i = 0; i < kh; i++) {
      patch.push([]); kernel.push([]); prod.push([]); pad.push([]);
      for (let j = 0; j < kw; j++) {
        const iy = win.y0 + i * dh, ix = win.x0 + j * dw;
        const outside = iy < 0 || ix < 0 || iy >= Hi || ix >= Wi;
        const v = outside ? 0 : CX.at(In, c, iy, ix);
        const w = CX.floats[K.o + ((k * cin + ci) * kh + i) * kw + j];
        patch[i].push(v); kernel[i].push(w); prod[i].push(v * w); pad[i].push(outside);
        sum += v * w;
      }
    }
    return { c, patch, kernel, prod, pad, sum };
  });
  const total = rows.reduce((s, r) => s + r.sum, 0);
  const bias = L.conv.bias ? CX.floats[L.conv.bias.o + k] : 0;
  const pre = total + bias;
  let out;
  if (L.activation === "softmax") {  // over the channels at this pixel (rare in a conv)
    const P = L.pre, C = P.shape[0];
    let m = -Infinity, s = 0;
    for (let c = 0; c < C; c++) m = Math.max(m, CX.at(P, c, y, x));
    for (let c = 0; c < C; c++) s += Math.exp(CX.at(P, c, y, x) - m);
    out = Math.exp(pre - m) / s;
  } else {
    out = CX.act(L.activation, pre);
  }
  return { rows, total, bias, pre, out, win, model: CX.at(L.out, k, y, x),
    modelPre: L.pre ? CX.at(L.pre, k, y, x) : CX.at(L.out, k, y, x) };
};

CX.convDetail = function (sel) {
  const { li, ch: k, y, x } = sel, L = CX.layer(li), N = CX.convNumbers(li, k, y, x);
  const P = CX.layer(li - 1), [kh, kw] = [L.conv.kernel.shape[2], L.conv.kernel.shape[3]];
  const [top, bottom, left, right] = L.conv.pad;
  const nodes = [
    CX.title(`${L.name}`, CX.el("span", { class: "ltype" }, "Conv2D"), ` channel ${k}, row ${y}, column ${x}`),
    CX.para(`Output (${y}, ${x}) looks at the ${kh}×${kw} window starting at input row ${N.win.y0}, column ${N.win.x0}` +
      ` (stride ${L.conv.stride.join("×")}` + (top || bottom || left || right ?
      `, zero padding ${top} top, ${bottom} bottom, ${left} left, ${right} right` : ", no padding") +
      `). For each input channel: multiply the patch by kernel ${k}'s weights element by element and add them up;` +
      ` then add the channel totals and the bias.`),
  ];
  const shown = CX.showAllChannels ? N.rows.length : Math.min(N.rows.length, CX.FIRST_CHANNEL_ROWS);
  const list = CX.el("div", { class: "conv-rows" });
  N.rows.slice(0, shown).forEach((r) => {
    list.append(CX.el("div", { class: "conv-row", dataset: { channel: r.c } },
      CX.el("div", { class: "conv-src" }, CX.miniMap(li - 1, r.c, N.win, 48),
        CX.el("div", { class: "caption" }, CX.channelName(li - 1, r.c))),
      CX.el("div", { class: "op-block" }, CX.el("div", { class: "caption" }, "input patch"),
        CX.grid(r.patch, { pad: r.pad })),
      CX.el("div", { class: "op" }, "⊙"),
      CX.el("div", { class: "op-block" }, CX.el("div", { class: "caption" }, `kernel ${k}, ${P.kind === "input" ? P.channel_names[r.c] : "ch " + r.c}`),
        CX.grid(r.kernel)),
      CX.el("div", { class: "op" }, "="),
      CX.el("div", { class: "op-block" }, CX.el("div", { class: "caption" }, "products"), CX.grid(r.prod)),
      CX.el("div", { class: "op" }, "Σ"),
      CX.el("div", { class: "subtotal" }, CX.num(r.sum, "channel-sum"))));
  });
  if (shown < N.rows.length) {
    const rest = N.rows.slice(shown);
    list.append(CX.el("div", { class: "conv-rest" },
      `+ ${rest.length} more input channels: `,
      CX.el("span", { class: "terms" }, rest.map((r, i) => [i ? " + " : "", CX.num(r.sum, "channel-sum")])),
      " ", CX.el("button", { class: "link", onclick: () => { CX.showAllChannels = true; CX.select(sel); } },
        `show all ${N.rows.length}`)));
  }
  nodes.push(list);
  const terms = N.rows.length <= 12 ? N.rows.map((r, i) => [i ? " + " : "", CX.num(r.sum)]) :
    [`the ${N.rows.length} channel totals`];
  nodes.push(CX.el("div", { class: "equation" },
    CX.el("div", {}, "sum = ", ...terms, " = ", CX.num(N.total, "total")),
    CX.el("div", {}, "sum + bias = ", CX.num(N.total), " + ", CX.num(N.bias, "bias"), " = ",
      CX.el("b", {}, CX.num(N.pre, "sum")), L.activation ? " (before the activation)" : ""),
    L.activation ? CX.el("div", {}, `${L.activation}(${CX.fmt(N.pre)}) = `,
      CX.el("b", {}, CX.num(N.out, "activation")),
      CX.el("span", { class: "formula" }, `   ${L.activation}(x) = ${CX.ACT_FORMULA[L.activation] || ""}`)) :
      CX.el("div", {}, "no activation: output = ", CX.el("b", {}, CX.num(N.out, "activation")))));
  if (L.pre) nodes.push(CX.check(N.pre, N.modelPre, "the model's pre-activation"));
  nodes.push(CX.check(N.out, N.model, "the model's own output"));
  return nodes;
};

/* ---- pooling ------------------------------------------------------------------------- */

CX.poolNumbers = function (li, c, y, x) {
  const L = CX.layer(li), In = CX.inputOf(li).out, [, Hi, Wi] = In.shape;
  const win = CX.window(L, y, x), values = [], pad = [];
  let best = -Infinity, bestAt = null, sum = 0, count = 0;
  for (let i = 0; i < win.h; i++) {
    values.push([]); pad.push([]);
    for (let j = 0; j < win.w; j++) {
      const iy = win.y0 + i, ix = win.x0 + j;
      const outside = iy < 0 || ix < 0 || iy >= Hi || ix >= Wi;
      const v = outside ? -Infinity : CX.at(In, c, iy, ix);
      values[i].push(v); pad[i].push(outside);
      if (!outside) {
        sum += v; count += 1;
        if (v > best) { best = v; bestAt = [i, j]; }
      }
    }
  }
  const out = L.pool.kind === "max" ? best : sum / count;
  return { win, values, pad, best, bestAt, sum, count, out, model: CX.at(L.out, c, y, x) };
};

CX.poolDetail = function (sel) {
  const { li, ch: c, y, x } = sel, L = CX.layer(li), N = CX.poolNumbers(li, c, y, x);
  const isMax = L.pool.kind === "max";
  return [
    CX.title(L.name, CX.el("span", { class: "ltype" }, L.type), ` channel ${c}, row ${y}, column ${x}`),
    CX.para(`Pooling works on each channel alone. Output (${y}, ${x}) takes the ${N.win.h}×${N.win.w} window at ` +
      `input row ${N.win.y0}, column ${N.win.x0} of channel ${c} and keeps its ` +
      (isMax ? "largest value." : "mean (padding not counted).")),
    CX.el("div", { class: "conv-row" },
      CX.el("div", { class: "conv-src" }, CX.miniMap(li - 1, c, N.win, 72),
        CX.el("div", { class: "caption" }, `${CX.layer(li - 1).name}, ch ${c}`)),
      CX.el("div", { class: "op-block" }, CX.el("div", { class: "caption" }, "window"),
        CX.grid(N.values, { pad: N.pad, mark: isMax ? N.bestAt : null, digits: 4 })),
      CX.el("div", { class: "op" }, "→"),
      CX.el("div", { class: "subtotal" }, isMax ? "max = " : `${CX.fmt(N.sum)} / ${N.count} = `,
        CX.el("b", {}, CX.num(N.out, "activation")))),
    CX.check(N.out, N.model),
  ];
};

/* ---- Dense --------------------------------------------------------------------------- */

/** Where input i of a Dense comes from, in words: "max_pooling2d_1, ch 3, (2, 5)". */
CX.origin = function (li, i) {
  const P = CX.layer(li - 1);
  if (P.kind === "flatten" && li >= 2 && CX.isImage(CX.layer(li - 2).out)) {
    const S = CX.layer(li - 2), [, H, W] = S.out.shape;
    const c = Math.floor(i / (H * W)), y = Math.floor(i / W) % H, x = i % W;
    return `${S.name} ch ${c} (${y}, ${x})`;
  }
  if (P.kind === "gap") return `${P.name}: ch ${i}`;
  return `${P.name}[${i}]`;
};

CX.denseNumbers = function (li, j) {
  const L = CX.layer(li), D = L.dense, top = D.top, k = top.shape[1];
  const terms = [];
  for (let t = 0; t < k; t++) {
    const b = top.o + (j * k + t) * 4;
    terms.push({ i: CX.floats[b], x: CX.floats[b + 1], w: CX.floats[b + 2], p: CX.floats[b + 3] });
  }
  const rest = CX.floats[D.rest.o + j], bias = CX.floats[D.bias.o + j];
  const pre = terms.reduce((s, t) => s + t.p, 0) + rest + bias;
  const out = CX.act(L.activation, pre);
  return { terms, rest, bias, pre, out, inputs: D.inputs, model: CX.floats[L.out.o + j],
    modelPre: L.pre ? CX.floats[L.pre.o + j] : CX.floats[L.out.o + j] };
};

CX.denseDetail = function (sel) {
  const { li, unit: j } = sel, L = CX.layer(li), N = CX.denseNumbers(li, j);
  const last = li === CX.payload.layers.length - 1, cls = CX.payload.model.classes[j];
  const nRest = N.inputs - N.terms.length;
  const nodes = [
    CX.title(L.name, CX.el("span", { class: "ltype" }, "Dense"), ` unit ${j}` + (last && cls !== undefined ? ` (${cls})` : "")),
    CX.para(`A Dense unit multiplies each of its ${N.inputs.toLocaleString("en")} inputs by its own weight and adds` +
      ` them up with a bias. The ${N.terms.length} largest terms (by size) are listed` +
      (nRest ? `; the other ${nRest.toLocaleString("en")} are added as one number.` : ".")),
    CX.el("table", { class: "terms-table" },
      CX.el("thead", {}, CX.el("tr", {}, ["input", "from", "x", "w", "w · x"].map((h) => CX.el("th", {}, h)))),
      CX.el("tbody", {}, N.terms.map((t) => CX.el("tr", { class: t.p >= 0 ? "pos" : "neg" },
        CX.el("td", {}, t.i), CX.el("td", { class: "from" }, CX.origin(li, t.i)),
        CX.el("td", {}, CX.num(t.x)), CX.el("td", {}, CX.num(t.w)), CX.el("td", {}, CX.num(t.p, "term")))))),
  ];
  const parts = [CX.num(N.terms.reduce((s, t) => s + t.p, 0)), " (listed)"];
  if (nRest) parts.push(" + ", CX.num(N.rest, "rest"), ` (other ${nRest.toLocaleString("en")})`);
  parts.push(" + ", CX.num(N.bias, "bias"), " (bias) = ", CX.el("b", {}, CX.num(N.pre, "sum")));
  nodes.push(CX.el("div", { class: "equation" }, CX.el("div", {}, ...parts),
    L.activation ? CX.el("div", {}, `${L.activation}(${CX.fmt(N.pre)}) = `, CX.el("b", {}, CX.num(N.out, "activation"))) :
      CX.el("div", {}, last ? "this is the logit of class " : "output = ",
        last ? [CX.el("b", {}, String(cls)), ": ", CX.el("b", {}, CX.num(N.out, "activation"))] :
          CX.el("b", {}, CX.num(N.out, "activation")))));
  if (L.pre) nodes.push(CX.check(N.pre, N.modelPre, "the model's pre-activation"));
  nodes.push(CX.check(N.out, N.model, "the model's own output"));
  if (last && CX.payload.model.output_activation) {
    nodes.push(CX.para("The output step turns these logits into probabilities: ",
      CX.el("button", { class: "link", onclick: () => CX.select({ li: li + 1, unit: j }) }, "see the softmax")));
  }
  return nodes;
};

/* ---- softmax / sigmoid (the model's output step) ------------------------------------- */

CX.softmaxNumbers = function () {
  const P = CX.payload, z = P.logits;
  if (P.model.output_activation === "sigmoid") {
    const p = z.map((v) => 1 / (1 + Math.exp(-v)));
    return { kind: "sigmoid", z, p: z.length === 1 ? [1 - p[0], p[0]] : p, model: P.probabilities };
  }
  const m = Math.max(...z), e = z.map((v) => Math.exp(v - m)), s = e.reduce((a, b) => a + b, 0);
  return { kind: "softmax", z, m, e, s, p: e.map((v) => v / s), model: P.probabilities };
};

CX.softmaxDetail = function (sel) {
  const P = CX.payload, N = CX.softmaxNumbers(), classes = P.model.classes;
  const nodes = [CX.title("output", CX.el("span", { class: "ltype" }, N.kind), ` class ${classes[sel.unit] ?? sel.unit}`)];
  if (N.kind === "sigmoid") {
    nodes.push(CX.para("One output: p = 1 / (1 + e^−logit) is the probability of the second class; the first gets 1 − p."));
  } else {
    nodes.push(CX.para(`Softmax: subtract the largest logit (${CX.fmt(N.m)}) so that e^x cannot overflow, ` +
      "take e^x of each, and divide by their sum. The results are positive and add up to 1."));
  }
  const head = N.kind === "softmax" ? ["class", "logit z", "z − max", "e^(z − max)", "p = e / Σ", "model"] :
    ["class", "p", "model"];
  const rows = N.p.map((p, j) => {
    const cells = N.kind === "softmax" ?
      [classes[j] ?? j, CX.num(N.z[j]), CX.num(N.z[j] - N.m), CX.num(N.e[j]), CX.num(p, "prob"), CX.num(N.model[j], "model-prob")] :
      [classes[j] ?? j, CX.num(p, "prob"), CX.num(N.model[j], "model-prob")];
    return CX.el("tr", { class: j === sel.unit ? "selected" : "" }, cells.map((c) => CX.el("td", {}, c)));
  });
  nodes.push(CX.el("table", { class: "terms-table" }, CX.el("thead", {}, CX.el("tr", {}, head.map((h) => CX.el("th", {}, h)))),
    CX.el("tbody", {}, rows)));
  if (N.kind === "softmax") nodes.push(CX.el("div", { class: "equation" }, "Σ e = ", CX.num(N.s, "sum")));
  const j = sel.unit;
  nodes.push(CX.check(N.p[j], N.model[j], `the model's probability for ${classes[j] ?? j}`));
  return nodes;
};

/* ---- the other layers ---------------------------------------------------------------- */

CX.valueAt = (ref, sel) => (sel.unit !== undefined ? CX.floats[ref.o + sel.unit] : CX.at(ref, sel.ch, sel.y, sel.x));
CX.where = (sel) => (sel.unit !== undefined ? `[${sel.unit}]` : ` channel ${sel.ch}, row ${sel.y}, column ${sel.x}`);

CX.bnDetail = function (sel) {
  const L = CX.layer(sel.li), B = L.bn, c = sel.unit !== undefined ? sel.unit : sel.ch;
  const x = CX.valueAt(CX.inputOf(sel.li).out, sel);
  const [mu, v, g, b] = [B.mean, B.var, B.gamma, B.beta].map((r) => CX.floats[r.o + c]);
  const std = Math.sqrt(v + B.eps), out = (x - mu) / std * g + b;
  return [
    CX.title(L.name, CX.el("span", { class: "ltype" }, "BatchNormalization"), CX.where(sel)),
    CX.para(`When predicting, batch norm uses the mean μ and variance σ² it averaged during training for` +
      ` channel ${c}, then scales by γ and shifts by β (both learned).`),
    CX.el("div", { class: "equation" },
      CX.el("div", {}, "x = ", CX.num(x), ",  μ = ", CX.num(mu), ",  σ² = ", CX.num(v), ",  ε = ", CX.fmt(B.eps, 4),
        ",  γ = ", CX.num(g), ",  β = ", CX.num(b)),
      CX.el("div", {}, `(x − μ) / √(σ² + ε) · γ + β = (${CX.fmt(x)} − ${CX.fmt(mu)}) / ${CX.fmt(std)} · ${CX.fmt(g)} + ${CX.fmt(b)} = `,
        CX.el("b", {}, CX.num(out, "activation")))),
    CX.check(out, CX.valueAt(L.out, sel)),
  ];
};

CX.actDetail = function (sel) {
  const L = CX.layer(sel.li), x = CX.valueAt(CX.inputOf(sel.li).out, sel);
  const out = L.activation && L.activation !== "softmax" ? CX.act(L.activation, x) : x;
  return [
    CX.title(L.name, CX.el("span", { class: "ltype" }, "Activation"), CX.where(sel)),
    CX.para(`Applies ${L.activation || "nothing"} to each value on its own: ${CX.ACT_FORMULA[L.activation] || ""}.`),
    CX.el("div", { class: "equation" }, `${L.activation || "identity"}(`, CX.num(x), ") = ", CX.el("b", {}, CX.num(out, "activation"))),
    CX.check(out, CX.valueAt(L.out, sel)),
  ];
};

CX.gapDetail = function (sel) {
  const L = CX.layer(sel.li), In = CX.inputOf(sel.li).out, c = sel.unit;
  const v = CX.arr(In).subarray(c * In.shape[1] * In.shape[2], (c + 1) * In.shape[1] * In.shape[2]);
  let sum = 0, max = -Infinity;
  for (const a of v) { sum += a; max = Math.max(max, a); }
  const out = L.gap.kind === "max" ? max : sum / v.length;
  return [
    CX.title(L.name, CX.el("span", { class: "ltype" }, L.type), ` [${c}]`),
    CX.para(`Channel ${c} of ${CX.inputOf(sel.li).name} (${In.shape[1]}×${In.shape[2]} values) becomes one number: its ` +
      (L.gap.kind === "max" ? "largest value." : "mean.")),
    CX.miniMap(sel.li - 1, c, null, 96),
    CX.el("div", { class: "equation" }, L.gap.kind === "max" ? "max = " : [`sum ${CX.fmt(sum)} / ${v.length} = `],
      CX.el("b", {}, CX.num(out, "activation"))),
    CX.check(out, CX.valueAt(L.out, sel)),
  ];
};

CX.copyDetail = function (sel, text) {
  const L = CX.layer(sel.li), P = CX.inputOf(sel.li);
  let src = sel, from = "";
  if (L.kind === "flatten") {
    const [C, H, W] = P.out.shape, i = sel.unit;
    src = { ch: Math.floor(i / (H * W)), y: Math.floor(i / W) % H, x: i % W };
    from = `${P.name} channel ${src.ch}, row ${src.y}, column ${src.x}` + ` (index = c·${H}·${W} + y·${W} + x, channels first as in PyTorch)`;
  } else {
    from = `${P.name}${CX.where(sel)}`;
  }
  const x = CX.valueAt(P.out, src);
  return [
    CX.title(L.name, CX.el("span", { class: "ltype" }, L.type), CX.where(sel)),
    CX.para(text),
    CX.el("div", { class: "equation" }, `= ${from} = `, CX.el("b", {}, CX.num(x, "activation"))),
    CX.check(x, CX.valueAt(L.out, sel)),
  ];
};

CX.inputDetail = function (sel) {
  const L = CX.layer(0), norm = CX.payload.model.normalization, c = sel.ch;
  const v = CX.at(L.out, c, sel.y, sel.x), mean = norm.mean[c], std = norm.std[c];
  const pixel = Math.round((v * std + mean) * 255);
  const again = (pixel / 255 - mean) / std;
  return [
    CX.title("input", CX.el("span", { class: "ltype" }, L.channel_names[c]), ` row ${sel.y}, column ${sel.x}`),
    CX.para("The network sees each pixel value p (0 to 255) as (p / 255 − mean) / std, per channel, " +
      "with the mean and std used in training."),
    CX.el("div", { class: "equation" },
      `(${pixel} / 255 − ${CX.fmt(mean)}) / ${CX.fmt(std)} = `, CX.el("b", {}, CX.num(again, "activation"))),
    CX.check(again, v, "the value the model received"),
  ];
};

CX.padDetail = function (sel) {
  const L = CX.layer(sel.li), P = CX.inputOf(sel.li), [, H, W] = P.out.shape;
  // padding: 1, [rows, columns], or Keras' asymmetric [[top, bottom], [left, right]]
  const pads = Array.isArray(L.args.padding) ? L.args.padding : [1, 1];
  const [[pt, pb], [pl, pr]] = pads.map((p) => (Array.isArray(p) ? p : [p, p]));
  const y = sel.y - pt, x = sel.x - pl, inside = y >= 0 && x >= 0 && y < H && x < W;
  const v = inside ? CX.at(P.out, sel.ch, y, x) : 0;
  return [
    CX.title(L.name, CX.el("span", { class: "ltype" }, L.type), CX.where(sel)),
    CX.para(pt === pb && pl === pr ? `Adds ${pt} row(s) of zeros above and below and ${pl} column(s) left and right.`
      : `Adds rows of zeros, ${pt} above and ${pb} below, and columns, ${pl} left and ${pr} right.`),
    CX.el("div", { class: "equation" }, inside ? `= ${P.name} channel ${sel.ch}, row ${y}, column ${x} = ` :
      "a padding zero = ", CX.el("b", {}, CX.num(v, "activation"))),
    CX.check(v, CX.valueAt(L.out, sel)),
  ];
};

CX.otherDetail = function (sel) {
  const L = CX.layer(sel.li);
  return [
    CX.title(L.name, CX.el("span", { class: "ltype" }, L.type), CX.where(sel)),
    CX.para(`${L.type} is a composite layer; its output is shown, its inside is not broken down here ` +
      "(`cnnlab summary` lists its parts)."),
    CX.el("div", { class: "equation" }, "output = ", CX.el("b", {}, CX.num(CX.valueAt(L.out, sel), "activation"))),
  ];
};

/** The panel for the selected neuron. */
CX.detail = function (sel) {
  if (sel.li === CX.payload.layers.length) return CX.softmaxDetail(sel);
  const L = CX.layer(sel.li);
  switch (L.kind) {
    case "input": return CX.inputDetail(sel);
    case "conv": return CX.convDetail(sel);
    case "pool": return CX.poolDetail(sel);
    case "dense": return CX.denseDetail(sel);
    case "bn": return CX.bnDetail(sel);
    case "act": return CX.actDetail(sel);
    case "gap": return CX.gapDetail(sel);
    case "flatten": return CX.copyDetail(sel, "Flatten only rearranges: each output is one input value.");
    case "dropout": return CX.copyDetail(sel, "When predicting, dropout passes every value through unchanged.");
    case "pad": return CX.padDetail(sel);
    default: return CX.otherDetail(sel);
  }
};
