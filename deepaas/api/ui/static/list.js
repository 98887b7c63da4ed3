// Every model that can be trained, with its trainings (newest first) and
// a form to start one. Refreshed every few seconds.

import {
  ApiError, argsText, duration, el, elapsed, isAuth, json, problem, state, trainPath,
} from "./api.js";
import { startForm, trainable } from "./form.js";

const POLL_MS = 2000;
const HEADINGS = ["status", "training", "started", "duration", "devices", "arguments", "ETA"];

/** The list in ``main``; .stop() ends its polling. */
export function listView(main) {
  let timer = null;
  let stopped = false;
  const tables = new Map(); // model -> tbody
  state.view = "loading";
  state.status = null;

  function row(model, r) {
    const link = el("a", { href: `#${encodeURIComponent(model)}/${r.uuid}`, class: "mono" }, r.uuid);
    const eta = r.eta_seconds === null || r.eta_seconds === undefined ? "" : duration(r.eta_seconds);
    return el(
      "tr",
      { "data-uuid": r.uuid, "data-status": r.status },
      el("td", {}, el("span", { class: `status status-${r.status}` }, r.status)),
      el("td", {}, link),
      el("td", {}, r.start_date ? r.start_date.replace(/\.\d+$/, "") : ""),
      el("td", {}, elapsed(r)),
      el("td", {}, (r.devices || []).join(", ")),
      el("td", { class: "args" }, argsText(r.args)),
      el("td", { class: "eta" }, eta),
    );
  }

  /** ``body`` shows ``rows``. Refreshed every few seconds: rebuilt only
   * when the trainings listed change (one started, or went); else only a
   * cell whose content changed is replaced, so a selection in another cell
   * (a user copying a uuid or the arguments) survives. */
  function fill(body, rows) {
    const uuids = rows.map((tr) => tr.dataset.uuid).join("\n");
    if (body.dataset.uuids !== uuids || !rows.length) {
      body.replaceChildren(...rows);
      if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "quiet" }, "no training yet")));
      body.dataset.uuids = uuids;
      return;
    }
    [...body.rows].forEach((tr, i) => {
      const fresh = rows[i];
      if (tr.dataset.status !== fresh.dataset.status) tr.dataset.status = fresh.dataset.status;
      [...tr.cells].forEach((td, j) => {
        const next = fresh.cells[j];
        if (!td.isEqualNode(next)) td.replaceChildren(...next.childNodes);
      });
    });
  }

  async function refresh() {
    const failures = new Set(); // a token's message once, not once a model
    await Promise.all(
      [...tables.entries()].map(async ([model, body]) => {
        try {
          fill(body, (await json(trainPath(model))).reverse().map((r) => row(model, r)));
        } catch (error) {
          const auth = error instanceof ApiError && isAuth(error.status);
          failures.add(auth ? error.message : `${model}: ${error.message}`);
          if (error instanceof ApiError && error.status === 402) {
            body.replaceChildren(el("tr", {}, el("td", { colspan: 7 }, error.message)));
            delete body.dataset.uuids; // rebuilt on the next answer
          }
        }
      }),
    );
    problem([...failures].join("; "));
  }

  async function tick() {
    await refresh();
    state.listed += 1;
    state.view = "list";
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  }

  async function begin() {
    let doc, served;
    try {
      [doc, served] = await Promise.all([json("openapi.json"), json("ui/trainings/models.json")]);
    } catch (error) {
      problem(`Cannot read the API document: ${error.message}`);
      return;
    }
    if (!served.train_endpoint) {
      state.view = "list";
      main.replaceChildren(el("p", { class: "off" }, "Training is off on this server (--notrain-endpoint)."));
      return;
    }
    const trains = new Set(served.models.filter((m) => m.train).map((m) => m.name));
    const models = trainable(doc).filter((model) => trains.has(model.name));
    const sections = models.map((model) => {
      const body = el("tbody");
      tables.set(model.name, body);
      const started = (record) => {
        location.hash = `${encodeURIComponent(model.name)}/${record.uuid}`;
      };
      return el(
        "section",
        { class: "model", "data-model": model.name },
        el("h2", {}, model.name),
        el(
          "details",
          { class: "start" },
          el("summary", {}, "Start a training"),
          startForm(doc, model, started, served.gpus),
        ),
        el("table", {}, el("thead", {}, el("tr", {}, HEADINGS.map((h) => el("th", {}, h)))), body),
      );
    });
    if (!sections.length) sections.push(el("p", { class: "quiet" }, "No model here can be trained."));
    const others = served.models.filter((m) => !m.train).map((m) => m.name);
    if (others.length) {
      sections.push(el("p", { class: "quiet untrainable" }, `Models without train(): ${others.join(", ")}.`));
    }
    main.replaceChildren(...sections);
    tick();
  }

  begin();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
