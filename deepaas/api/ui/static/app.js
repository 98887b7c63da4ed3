// The training dashboard: "#" lists every training, "#model/uuid" shows one.
// The token (if the server wants one) is kept in this tab's sessionStorage
// and sent as "Authorization: Bearer"; readiness says when the server drains.

import { call, setToken, state, token } from "./api.js";
import { jobView } from "./job.js";
import { listView } from "./list.js";

const main = document.getElementById("view");
const banner = document.getElementById("banner");
let current = null;

function route() {
  if (current) current.stop();
  const [model, uuid] = location.hash.replace(/^#/, "").split("/").map(decodeURIComponent);
  current = model && uuid ? jobView(main, model, uuid) : listView(main);
}

async function watchReadiness() {
  let text = "";
  try {
    const response = await call("readyz");
    const body = await response.json();
    state.draining = body.status === "draining";
    if (state.draining) {
      text =
        "The server is shutting down (draining): it starts no new training; " +
        "running ones go on until they end or the shutdown timeout.";
    }
  } catch (error) {
    text = "The server does not answer.";
  }
  banner.textContent = text;
  banner.hidden = !text;
  setTimeout(watchReadiness, 2000);
}

const form = document.getElementById("token-form");
const field = document.getElementById("token");
field.value = token();
form.addEventListener("submit", (event) => {
  event.preventDefault();
  setToken(field.value.trim());
  route();
});
document.getElementById("token-forget").addEventListener("click", () => {
  field.value = "";
  setToken("");
  route();
});

window.addEventListener("hashchange", route);
route();
watchReadiness();
