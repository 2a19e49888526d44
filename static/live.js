// Live values on the meter page: polls the meter's latest measurements and updates the
// cells marked with data-key. The page shows the same values without JavaScript.
(function () {
  "use strict";
  var stamp = document.getElementById("live-ts");
  if (!stamp) { return; }
  var src = stamp.getAttribute("data-src");
  function fmt(v) { return typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(2)) : "–"; }
  function refresh() {
    fetch(src, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (latest) {
        if (!latest) { return; }
        document.querySelectorAll("[data-key]").forEach(function (cell) {
          var key = cell.getAttribute("data-key");
          if (key === "tariff") {
            cell.textContent = typeof latest.tariff === "number" ? "T" + latest.tariff : "–";
          } else if (key && Object.prototype.hasOwnProperty.call(latest.values, key)) {
            cell.textContent = fmt(latest.values[key]);
          }
        });
        if (latest.ts) { stamp.textContent = latest.ts; }
      })
      .catch(function () { /* keep the last values; the next poll retries */ });
  }
  setInterval(refresh, 5000);
})();
