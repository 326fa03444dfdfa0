// The dashboard's shell: sign-in bar, the one-line error, hash routing.

import { onUnauthorized, token } from "./api.js";
import { clusterView } from "./cluster.js";
import { fill, h } from "./dom.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { studiesView, studyView } from "./studies.js";

const main = document.getElementById("main");
const errorLine = document.getElementById("error");
const signin = document.getElementById("signin");
const signedin = document.getElementById("signedin");
const tokenInput = document.getElementById("token-input");

const ROUTES = [
  [/^#\/jobs\/(\d+)$/, "jobs", (ctx, m) => jobView(main, ctx, Number(m[1]))],
  [/^#\/jobs$/, "jobs", (ctx) => jobsView(main, ctx)],
  [/^#\/studies\/(\d+)$/, "studies", (ctx, m) => studyView(main, ctx, Number(m[1]))],
  [/^#\/studies$/, "studies", (ctx) => studiesView(main, ctx)],
  [/^#\/cluster$/, "cluster", (ctx) => clusterView(main, ctx)],
];

// One line for the latest problem. Its source says who may clear it: a
// successful poll clears a failed poll's message, not a refused cancel's.
function showError(message, source) {
  errorLine.textContent = message;
  errorLine.dataset.source = source;
  errorLine.hidden = false;
}

function clearError(source) {
  if (!source || errorLine.dataset.source === source) {
    errorLine.hidden = true;
    errorLine.textContent = "";
    delete errorLine.dataset.source;
  }
}

/** What views get: run(fn, source) calls fn, reporting any failure in the error line. */
const ctx = {
  async run(fn, source = "action") {
    try {
      const result = await fn();
      clearError(source);
      return result;
    } catch (err) {
      // A 401 was already turned into "enter the token again".
      if (err.status !== 401) showError(err.message, source);
      return undefined;
    }
  },
};

let stopView = null;

function render() {
  if (stopView) stopView();
  stopView = null;
  const signedIn = Boolean(token.get());
  signin.hidden = signedIn;
  signedin.hidden = !signedIn;
  if (errorLine.dataset.source !== "auth") clearError();
  const hash = window.location.hash || "#/jobs";
  const [pattern, section, view] = ROUTES.find(([re]) => re.test(hash)) ?? ROUTES[1];
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!signedIn) {
    // Nothing is asked of the API before there is a token.
    fill(main, h("p", { class: "empty", id: "need-token" }, "Enter your API token above to see jobs and studies."));
    return;
  }
  stopView = view(ctx, hash.match(pattern)) ?? null;
}

signin.addEventListener("submit", (event) => {
  event.preventDefault();
  const value = tokenInput.value.trim();
  if (!value) return;
  token.set(value);
  tokenInput.value = "";
  clearError();
  render();
  main.focus();
});

document.getElementById("signout").addEventListener("click", () => {
  token.clear();
  clearError();
  render();
  tokenInput.focus();
});

onUnauthorized((err) => {
  token.clear();
  showError(`The API refused the token (${err.message}); enter it again.`, "auth");
  render();
  tokenInput.focus();
});

window.addEventListener("hashchange", () => {
  render();
  main.focus();
});
render();
