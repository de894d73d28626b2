// Herald console: live updates and confirmations. Pages read fine without
// this script; it only refreshes the page's content when Herald's change
// feed says a batch changed, and asks before actions that send or change.
"use strict";

function confirmActions() {
  document.addEventListener("submit", (event) => {
    const form = event.target;
    const question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });
}

// Replaces <main> with the same page fetched again: the server renders,
// the script only swaps, so live and reloaded pages never differ.
async function refresh() {
  const response = await fetch(window.location.href, { credentials: "same-origin" });
  if (!response.ok) {
    return;
  }
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = page.getElementById("content");
  const current = document.getElementById("content");
  const active = document.activeElement;
  if (fresh && current && !(active && current.contains(active) && active.matches("input, select"))) {
    current.replaceWith(fresh);
  }
}

function followChanges() {
  const url = document.body.getAttribute("data-live");
  if (!url || !window.EventSource) {
    return;
  }
  const badge = document.getElementById("live");
  const source = new EventSource(url);
  let pending = null;
  source.addEventListener("open", () => { if (badge) badge.hidden = false; });
  source.addEventListener("error", () => { if (badge) badge.hidden = true; });
  source.addEventListener("change", () => {
    // Several changes in a burst cost one fetch.
    if (pending === null) {
      pending = window.setTimeout(() => { pending = null; refresh(); }, 250);
    }
  });
}

confirmActions();
followChanges();
