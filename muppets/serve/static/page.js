// muppets serve: one form per route the model serves; results drawn as bars and highlights.
"use strict";
const $ = (selector) => document.querySelector(selector);
const keyInput = $("#key");
keyInput.value = sessionStorage.getItem("muppets-key") || "";

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

async function call(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (keyInput.value) headers.Authorization = `Bearer ${keyInput.value}`;
  const response = await fetch(path, { method, headers, body: body && JSON.stringify(body) });
  const data = await response.json();
  if (!response.ok) {
    if (response.status === 401) $("#key-row").hidden = false;
    const e = data.error || {};
    throw new Error(`${response.status}: ${e.field ? e.field + ": " : ""}${e.message}`);
  }
  return data;
}

function bars(pairs) {
  const best = Math.max(...pairs.map(([, p]) => p));
  return pairs.map(([name, p]) =>
    element("div", { class: p === best ? "bar-row top" : "bar-row" },
      element("span", { class: "label" }, name),
      element("div", { class: "bar" }, element("div", { style: `width:${(100 * p).toFixed(1)}%` })),
      element("span", { class: "prob" }, p.toFixed(3))));
}

function highlighted(text, spans) {
  // spans: [{start, end, type}] sorted, not overlapping -> text with <mark>s
  const out = element("div", { class: "passage" });
  let at = 0;
  for (const span of spans) {
    out.append(text.slice(at, span.start));
    const mark = element("mark", { class: span.type || "" }, text.slice(span.start, span.end));
    if (span.type) mark.append(element("small", {}, span.type));
    out.append(mark);
    at = span.end;
  }
  out.append(text.slice(at));
  return out;
}

const ROUTES = {
  classify: {
    title: "Classify",
    body: (f) => ({ inputs: [f.text.value], ...(f.pair.value.trim() ? { text_pairs: [f.pair.value] } : {}) }),
    show: ([r]) => r.probabilities
      ? [element("p", {}, "label: ", element("strong", { class: "answer" }, r.label)), ...bars(Object.entries(r.probabilities))]
      : [element("p", {}, "score: ", element("strong", { class: "answer" }, String(r.score ?? r.label)))],
  },
  tag: {
    title: "Tag",
    body: (f) => ({ inputs: [f.text.value] }),
    show: ([r], f) => [highlighted(f.text.value, r.entities),
      element("p", { class: "note answer" }, r.entities.map((e) => `${e.type}: ${f.text.value.slice(e.start, e.end)}`).join("; ") || "no entities")],
  },
  qa: {
    title: "Question answering",
    body: (f) => ({ inputs: [{ question: f.question.value, context: f.context.value }] }),
    show: ([r], f) => r.start === null
      ? [element("p", { class: "answer" }, "no answer")]
      : [element("p", {}, "answer: ", element("strong", { class: "answer" }, r.answer)),
         highlighted(f.context.value, [{ start: r.start, end: r.end }])],
  },
  "fill-mask": {
    title: "Fill mask",
    body: (f) => ({ inputs: [f.text.value], top_k: Number(f.top_k.value) }),
    show: ([r]) => r.masks.flatMap((options, n) => [
      element("p", {}, `mask ${n + 1}: `, element("strong", { class: "answer" }, options[0].token)),
      ...bars(options.map((o) => [o.token, o.probability]))]),
  },
  embed: {
    title: "Embed",
    body: (f) => ({ inputs: [f.text.value], pooling: f.pooling.value, normalize: f.normalize.checked }),
    show: ([r]) => {
      const v = r.embedding;
      const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
      return [element("p", { class: "answer" }, `${v.length} dimensions, norm ${norm.toFixed(3)}`),
        element("p", { class: "vector" }, `[${v.slice(0, 8).map((x) => x.toFixed(4)).join(", ")}, ...]`)];
    },
  },
};

function select(route) {
  for (const form of document.querySelectorAll("form.route")) form.hidden = form.id !== `form-${route}`;
  for (const tab of document.querySelectorAll("nav button")) tab.classList.toggle("active", tab.dataset.route === route);
  $("#result").replaceChildren();
}

async function submit(route, form) {
  const result = $("#result");
  result.dataset.state = "waiting";
  result.replaceChildren(element("p", { class: "note" }, "..."));
  sessionStorage.setItem("muppets-key", keyInput.value);
  try {
    const data = await call("POST", `/${route}`, ROUTES[route].body(form));
    const r = data.results[0];
    const notes = r.truncated ? [element("p", { class: "note" }, "(the text was truncated to the model's length)")] : [];
    result.replaceChildren(...ROUTES[route].show(data.results, form), ...notes);
    result.dataset.state = "done";
  } catch (e) {
    result.replaceChildren(element("p", { class: "error" }, e.message));
    result.dataset.state = "error";
  }
}

async function start() {
  let info;
  try {
    info = await call("GET", "/info");
  } catch (e) {
    $("#model").textContent = `${e.message} (enter the API key and reload)`;
    keyInput.addEventListener("change", () => { sessionStorage.setItem("muppets-key", keyInput.value); location.reload(); });
    return;
  }
  const what = info.task ? `${info.task} (${info.head}${info.labels && info.labels.length ? ": " + info.labels.join(", ") : ""})` : info.kind;
  $("#model").textContent = `${info.model_type || ""} ${what}; routes: ${info.routes.map((r) => "/" + r).join(", ")}`;
  if (info.mask_token) {
    for (const s of document.querySelectorAll(".mask-token")) s.textContent = info.mask_token;
    const text = $("#form-fill-mask").text;
    text.value = text.value.replace("[MASK]", info.mask_token);
  }
  const tabs = $("#tabs");
  for (const route of info.routes) {
    const form = $(`#form-${route}`);
    if (!form) continue;
    form.addEventListener("submit", (event) => { event.preventDefault(); submit(route, form); });
    const tab = element("button", { type: "button", "data-route": route }, ROUTES[route].title);
    tab.addEventListener("click", () => select(route));
    tabs.append(tab);
  }
  select(info.routes[0]);
  document.body.dataset.ready = "true";
}
start();
