/* The admin's send progress page: polls progress.json every second and updates the counts in place
   until the send is finished. Served from /admin/static/progress.js (the admin's CSP: scripts from
   'self' only); without it the page still shows the counts, and a reload updates them. */
(function () {
  "use strict";
  var box = document.getElementById("progress");
  if (!box) { return; }
  var url = box.getAttribute("data-url");
  function set(id, value) { var el = document.getElementById(id); if (el) { el.textContent = String(value); } }
  function tick() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (p) {
        if (!p) { return; }
        set("progress-sent", p.sent);
        set("progress-failed", p.failed);
        set("progress-retrying", p.retrying);
        set("progress-to-go", p.to_go);
        var bar = document.getElementById("progress-bar");
        if (bar) { bar.max = Math.max(p.total, 1); bar.value = p.sent + p.failed; }
        if (p.finished) {
          set("progress-state", "sent");
          set("progress-words", "Every message has been handed to the mail server.");
        } else {
          set("progress-words", p.total ? "Sending: this page updates by itself." : "Preparing the send…");
          window.setTimeout(tick, 1000);
        }
      })
      .catch(function () { window.setTimeout(tick, 3000); });
  }
  window.setTimeout(tick, 500);
}());
