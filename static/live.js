// Live values on the meter page: polls the meter's latest measurements and updates the
// cells marked with data-key. The page shows the same values without JavaScript.
//
// The text of a value is the server's (`measurement_text` in server/src/web/pages/meter.rs):
// the same rounding (half up on the magnitude, from integers), the same units and the same
// thresholds, so a refreshed cell reads exactly as a reloaded page would.
(function () {
  "use strict";
  var SCALE = [1, 10, 100, 1000];

  function fixed(x, decimals) {
    if (typeof x !== "number" || !isFinite(x)) { return "\u2013"; }
    decimals = Math.min(decimals, 3);
    var n = Math.round(Math.abs(x) * SCALE[decimals]);
    var digits = String(n);
    while (digits.length < decimals + 1) { digits = "0" + digits; }
    var cut = digits.length - decimals;
    var sign = x < 0 && n !== 0 ? "-" : "";
    return decimals === 0 ? sign + digits : sign + digits.slice(0, cut) + "." + digits.slice(cut);
  }

  function sig(x) {
    var a = Math.abs(x);
    var d = a >= 100 ? 0 : a >= 10 ? 1 : (a >= 1 || a === 0) ? 2 : 3;
    return fixed(x, d);
  }

  function kilo(x, unit) {
    var k = x / 1000;
    return Math.abs(k) >= 10000 ? sig(k / 1000) + " M" + unit : sig(k) + " k" + unit;
  }

  function measurementText(key, v) {
    if (typeof v !== "number" || !isFinite(v)) { return "\u2013"; }
    var a = Math.abs(v);
    switch (key.replace(/[0-9]+$/, "")) {
      case "u": return a >= 10000 ? sig(v / 1000) + " kV" : fixed(v, 1) + " V";
      case "i":
      case "i_n": return a >= 10000 ? sig(v / 1000) + " kA" : a >= 100 ? fixed(v, 1) + " A" : fixed(v, 2) + " A";
      case "p": return kilo(v, "W");
      case "q": return kilo(v, "var");
      case "s": return kilo(v, "VA");
      case "pf": return fixed(v, 3);
      case "pa": return fixed(v, 1) + "\u00b0";
      case "frequency": return fixed(v, 2) + " Hz";
      case "temperature": return fixed(v, 1) + " \u00b0C";
      case "thd_u":
      case "thd_i": return fixed(v, 1) + " %";
      default: return sig(v);
    }
  }
  // For the browser tests, which compare it with the server's text.
  window.headendMeasurementText = measurementText;

  // "measured 7 Dec 2026 10:48:32" in the site's zone, as the server writes it.
  function measuredText(iso, zone) {
    var when = new Date(iso);
    if (isNaN(when.getTime())) { return null; }
    try {
      var parts = {};
      new Intl.DateTimeFormat("en-US", {
        timeZone: zone, year: "numeric", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23"
      }).formatToParts(when).forEach(function (p) { parts[p.type] = p.value; });
      var two = function (v) { return ("0" + v).slice(-2); };
      return "measured " + Number(parts.day) + " " + parts.month + " " + parts.year + " " +
        two(parts.hour) + ":" + two(parts.minute) + ":" + two(parts.second);
    } catch (e) {
      return null;
    }
  }
  window.headendMeasuredText = measuredText;

  var stamp = document.getElementById("live-ts");
  if (!stamp) { return; }
  var src = stamp.getAttribute("data-src");
  var zone = stamp.getAttribute("data-zone") || "UTC";
  function refresh() {
    fetch(src, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (latest) {
        if (!latest) { return; }
        document.querySelectorAll("[data-key]").forEach(function (cell) {
          var key = cell.getAttribute("data-key");
          if (key === "tariff") {
            cell.textContent = typeof latest.tariff === "number" ? "T" + latest.tariff : "\u2013";
          } else if (key && Object.prototype.hasOwnProperty.call(latest.values, key)) {
            cell.textContent = measurementText(key, latest.values[key]);
          }
        });
        if (latest.ts) { stamp.textContent = measuredText(latest.ts, zone) || latest.ts; }
      })
      .catch(function () { /* keep the last values; the next poll retries */ });
  }
  setInterval(refresh, 5000);
})();
