// One training: its record, live log, curves, and a cancel button (while
// it is queued or running).
// "#model/uuid" in the page's URL.

import {
  ApiError, FINISHED, argsText, duration, el, elapsed, json, jobPath, problem, state,
} from "./api.js";
import { Curves } from "./charts.js";
import { LogView } from "./log.js";

const POLL_MS = 1000;

/** The view of training ``uuid`` of ``model`` in ``main``; .stop() ends it. */
export function jobView(main, model, uuid) {
  const path = jobPath(model, uuid);
  let record = null;
  let timer = null;
  let stopped = false;
  state.view = "loading";
  state.status = null;

  const fields = el("dl", { class: "record" });
  const cancel = el("button", { type: "button", class: "cancel", disabled: true }, "Cancel");
  const actions = el("p", { class: "actions" }, cancel); // only while queued or running
  const charts = el("div", { class: "charts" });
  const pre = el("pre", { id: "log", "data-bytes": "0" });
  const follow = el("input", { type: "checkbox", checked: true, id: "follow" });
  const curves = new Curves(charts, path);
  const log = new LogView(pre, path, async () => FINISHED.has((await refresh()).status));
  follow.addEventListener("change", () => {
    log.follow = follow.checked;
    if (follow.checked) pre.scrollTop = pre.scrollHeight;
  });

  async function refresh() {
    record = await json(path);
    show(record);
    return record;
  }

  function show(r) {
    state.status = r.status;
    state.eta = r.eta_seconds === undefined ? null : r.eta_seconds;
    main.dataset.status = r.status;
    const rows = [
      ["status", el("span", { class: `status status-${r.status}` }, r.status)],
      ["model", r.model || model],
      ["started", r.start_date || "(queued)"],
      ["duration", elapsed(r)],
      ["ETA", r.eta_seconds === null || r.eta_seconds === undefined ? "" : duration(r.eta_seconds)],
      ["devices", (r.devices || []).join(", ")],
      ["arguments", el("span", { class: "mono" }, argsText(r.args))],
      ["latest values", el("span", { class: "mono" }, argsText(r.progress))],
    ];
    if (r.message) rows.push(["message", r.message]);
    if (r.result && r.result.output !== null && r.result.output !== undefined) {
      rows.push(["output", el("span", { class: "mono" }, JSON.stringify(r.result.output))]);
    }
    fields.replaceChildren(...rows.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
    const ended = FINISHED.has(r.status);
    cancel.disabled = ended;
    cancel.hidden = actions.hidden = ended;
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    cancel.textContent = "Cancelling…";
    try {
      show(await json(path, { method: "DELETE" }));
      problem("");
    } catch (error) {
      problem(`Cancel failed: ${error.message}`);
      cancel.disabled = false;
    } finally {
      cancel.textContent = "Cancel";
    }
  });

  async function tick() {
    try {
      const wasRunning = record && !FINISHED.has(record.status);
      await refresh();
      await curves.poll();
      problem("");
      if (FINISHED.has(record.status) && !wasRunning) return; // read once more: done
    } catch (error) {
      problem(error.message);
    }
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  }

  async function begin() {
    try {
      record = await json(path);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return missing(main, model, uuid, error);
      state.view = "error";
      problem(error.message);
      main.replaceChildren(el("p", {}, el("a", { href: "#" }, "← all trainings")));
      return;
    }
    problem("");
    main.replaceChildren(
      el("p", {}, el("a", { href: "#" }, "← all trainings")),
      el("h2", { class: "mono" }, `${model} / ${uuid}`),
      fields,
      actions,
      el("h3", {}, "Curves"),
      charts,
      el("h3", {}, "Log ", el("label", { class: "quiet" }, follow, " follow")),
      pre,
    );
    show(record);
    state.view = "job";
    log.start();
    tick();
  }

  begin();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      log.stop();
      curves.stop();
    },
  };
}

function missing(main, model, uuid, error) {
  state.view = "missing";
  main.replaceChildren(
    el(
      "div",
      { class: "missing" },
      el("h2", {}, "No such training"),
      el("p", {}, `Model ${model} has no training ${uuid}.`),
      el("p", { class: "quiet" }, error.message),
      el("p", {}, el("a", { href: "#" }, "← all trainings")),
    ),
  );
}
