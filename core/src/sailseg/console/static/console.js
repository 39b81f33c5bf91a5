// sailseg console: refresh marked regions in place, select-all boxes. No framework, no build.
(function () {
  "use strict";
  function refresh(el) {
    var url = el.getAttribute("data-refresh");
    var every = parseInt(el.getAttribute("data-every") || "5000", 10);
    setInterval(function () {
      if (document.hidden) return;
      if (el.querySelector("details[open]") || el.contains(document.activeElement) && document.activeElement.tagName === "BUTTON") return;
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
        .then(function (html) { if (html !== null) el.innerHTML = html; })
        .catch(function () {});
    }, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
    document.querySelectorAll("[data-select-all]").forEach(function (box) {
      box.addEventListener("change", function () {
        var name = box.getAttribute("data-select-all");
        box.form.querySelectorAll('input[name="' + name + '"]').forEach(function (b) { b.checked = box.checked; });
      });
    });
  });
})();
