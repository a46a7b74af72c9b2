// hookbridge status page: refreshes the [data-refresh] region every few seconds (with a
// button to stop it), never while keyboard focus is inside it. Nothing else needs script.
"use strict";
(function () {
  const region = document.querySelector("[data-refresh]");
  const control = document.querySelector("[data-refresh-control]");
  const seconds = region ? Number(region.getAttribute("data-refresh")) : 0;
  if (!region || !control || !(seconds > 0)) return;
  let paused = false;
  const button = document.createElement("button");
  button.type = "button";
  button.setAttribute("aria-pressed", "false");
  button.textContent = "Pause auto-refresh";
  const note = document.createElement("span");
  note.className = "muted";
  note.textContent = "Refreshes every " + seconds + " s.";
  button.addEventListener("click", function () {
    paused = !paused;
    button.setAttribute("aria-pressed", String(paused));
    button.textContent = paused ? "Resume auto-refresh" : "Pause auto-refresh";
    note.textContent = paused ? "Auto-refresh paused." : "Refreshes every " + seconds + " s.";
  });
  control.append(button, note);
  async function refresh() {
    if (paused || document.hidden || region.contains(document.activeElement)) return;
    try {
      const response = await fetch(location.href, {
        credentials: "same-origin", headers: { Accept: "text/html" }, redirect: "manual",
      });
      if (response.type === "opaqueredirect" || response.status === 401) {
        location.reload();
        return;
      }
      if (!response.ok) return;
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.querySelector("[data-refresh]");
      if (fresh && !region.contains(document.activeElement)) region.replaceChildren(...fresh.childNodes);
    } catch (e) {
      note.textContent = "Could not refresh: the daemon did not answer.";
    }
  }
  setInterval(refresh, seconds * 1000);
})();
