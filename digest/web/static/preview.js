/* The admin's issue page: the preview frame grows to the edition's full height, so the edition reads
   as a page, not in a box with its own scroll bar. The frame shows no script (sandbox, CSP); this one
   only reads its height. Served from /admin/static/preview.js ('self' in the admin's CSP). */
(function () {
  "use strict";
  var frame = document.getElementById("preview");
  if (!frame) { return; }
  function fit() {
    try {
      var doc = frame.contentDocument;
      if (doc && doc.documentElement) {
        frame.style.height = Math.max(doc.documentElement.scrollHeight, 400) + "px";
      }
    } catch (e) { /* not readable (another origin): the stylesheet's height stays */ }
  }
  frame.addEventListener("load", fit);
  window.addEventListener("resize", fit);
  fit();
}());
