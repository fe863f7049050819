/* digest: the sign-up form on your own pages (docs/web-public.md, "Embedding the sign-up form").
   Load it with <script src="https://DIGEST/embed.js" defer></script>; it sends every
   <form data-digest-signup> on the page to digest and shows the answer in its [data-digest-status]. */
(function () {
  "use strict";
  var script = document.currentScript;
  var base = new URL(script.src).origin;

  function fields(form) {
    var data = new FormData(form);
    return {
      email: data.get("email") || "",
      name: data.get("name") || "",
      language: data.get("language") || document.documentElement.lang.slice(0, 2),
      series: data.getAll("series"),
      want_events: form.elements.want_events ? form.elements.want_events.checked : true,
      want_media: form.elements.want_media ? form.elements.want_media.checked : true
    };
  }

  function show(form, text, ok) {
    var status = form.querySelector("[data-digest-status]");
    if (!status) {
      status = document.createElement("p");
      status.setAttribute("data-digest-status", "");
      form.appendChild(status);
    }
    status.setAttribute("role", ok ? "status" : "alert");
    status.textContent = text;
  }

  function submit(event) {
    var form = event.currentTarget;
    event.preventDefault();
    var button = form.querySelector("[type=submit]");
    if (button) { button.disabled = true; }
    var language = { "Accept-Language": fields(form).language };
    fetch(base + "/api/v1/signup/token", { headers: language, credentials: "omit" })
      .then(function (answer) {
        if (!answer.ok) { throw new Error("refused"); }
        return answer.json();
      })
      .then(function (got) {
        var body = fields(form);
        body.token = got.token;
        return fetch(base + "/api/v1/signup", {
          method: "POST", credentials: "omit",
          headers: { "Content-Type": "application/json", "Accept-Language": body.language },
          body: JSON.stringify(body)
        });
      })
      .then(function (answer) {
        return answer.json().then(function (got) {
          if (answer.ok) { form.reset(); show(form, got.message, true); }
          else { show(form, got.error.message, false); }
        });
      })
      .catch(function () {
        show(form, form.getAttribute("data-digest-error") || "The sign-up could not be sent. Please try again later.", false);
      })
      .then(function () { if (button) { button.disabled = false; } });
  }

  function attach() {
    var forms = document.querySelectorAll("form[data-digest-signup]");
    for (var i = 0; i < forms.length; i++) { forms[i].addEventListener("submit", submit); }
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", attach); }
  else { attach(); }
}());
