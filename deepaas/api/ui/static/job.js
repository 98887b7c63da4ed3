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
    // [name, text, class of a span holding the text (null: plain text)]
    const rows = [
      ["status", r.status, `status status-${r.status}`],
      ["model", r.model || model, null],
      ["started", r.start_date || "(queued)", null],
      ["duration", elapsed(r), null],
      ["ETA", r.eta_seconds === null || r.eta_seconds === undefined ? "" : duration(r.eta_seconds), null],
      ["devices", (r.devices || []).join(", "), null],
      ["arguments", argsText(r.args), "mono"],
      ["latest values", argsText(r.progress), "mono"],
    ];
    if (r.message) rows.push(["message", r.message, null]);
    if (r.result && r.result.output !== null && r.result.output !== undefined) {
      rows.push(["output", JSON.stringify(r.result.output), "mono"]);
    }
    update(rows);
    state.shown += 1;
    const ended = FINISHED.has(r.status);
    cancel.disabled = ended;
    cancel.hidden = actions.hidden = ended;
  }

  /** The panel shows ``rows``. Shown every second: only a cell whose text
   * (or class) changed is touched, so a selection in another cell (a user
   * copying the arguments) survives; rebuilt only when the rows' names
   * change (a message or an output appears). */
  function update(rows) {
    const names = rows.map(([name]) => name).join("\n");
    if (fields.dataset.names !== names) {
      fields.replaceChildren(...rows.flatMap(([name, text, cls]) => [
        el("dt", {}, name),
        el("dd", {}, cls === null ? text : el("span", { class: cls }, text)),
      ]));
      fields.dataset.names = names;
      return;
    }
    const cells = fields.querySelectorAll(":scope > dd");
    rows.forEach(([, text, cls], i) => {
      const node = cls === null ? cells[i] : cells[i].firstElementChild;
      if (cls !== null && node.className !== cls) node.className = cls;
      if (node.textContent !== text) node.textContent = text;
    });
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
