// Interactive charts: upgrades every server-rendered `figure.chart` (an SVG plus a
// `script.chart-data` JSON block, see server/src/dashboard/charts.rs) to a uPlot chart with a
// tooltip (value and unit, interval, quality), touch support and, on the power graph, drag
// zoom with a "Reset zoom" button. The SVG stays in the DOM: it is the no-JavaScript and the
// print rendering (CSS hides it on `figure.chart.chart-live` on screen only).
// No inline script or style attribute is written (strict CSP); styles go through the CSSOM.
(function () {
  'use strict';

  if (typeof window.uPlot !== 'function' || !document.querySelectorAll) {
    return;
  }
  var uPlot = window.uPlot;
  var charts = [];

  function cssVar(name, fallback) {
    var v = window.getComputedStyle(document.documentElement).getPropertyValue(name);
    v = v ? v.trim() : '';
    return v || fallback;
  }

  function palette() {
    return {
      current: cssVar('--chart-1', '#2c6fad'),
      previous: cssVar('--chart-2', '#a9c6e4'),
      grid: cssVar('--chart-grid', 'rgba(128,128,128,0.25)'),
      text: cssVar('--chart-text', '#5b6875'),
      bad: cssVar('--chart-bad', '#b3261e')
    };
  }

  // The same rule as `dashboard::units::digits`: three significant digits (four for 1000-9999).
  function digits(v) {
    if (v === null || v === undefined || !isFinite(v)) {
      return '–';
    }
    var a = Math.abs(v);
    var s;
    if (a >= 100) {
      s = v.toFixed(0);
    } else if (a >= 10) {
      s = v.toFixed(1);
    } else if (a >= 1 || a === 0) {
      s = v.toFixed(2);
    } else {
      s = v.toFixed(3);
    }
    if (/^-[0.]*$/.test(s)) {
      s = s.slice(1);
    }
    return s;
  }

  function niceMax(v) {
    if (!(v > 0) || !isFinite(v)) {
      return 1;
    }
    var base = Math.pow(10, Math.floor(Math.log(v) / Math.LN10));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * base >= v * 1.0000001) {
        return steps[i] * base;
      }
    }
    return 10 * base;
  }

  function heightFor(kind, width, rows) {
    if (kind === 'share') {
      return Math.max(120, rows * 32 + 70);
    }
    return width < 600 ? 240 : 320;
  }

  function el(tag, className, text) {
    var e = document.createElement(tag);
    if (className) {
      e.className = className;
    }
    if (text !== undefined) {
      e.textContent = text;
    }
    return e;
  }

  // `hidden`, also when a stylesheet gives buttons a `display`.
  function setHidden(e, hidden) {
    e.hidden = hidden;
    e.style.display = hidden ? 'none' : '';
  }

  // ---- tooltip ---------------------------------------------------------------------------

  function makeTip() {
    var tip = el('div', 'chart-tip');
    tip.setAttribute('role', 'status');
    tip.setAttribute('aria-live', 'polite');
    // The look is app.css' (`div.chart-tip`); only what the positioning needs is set here.
    var s = tip.style;
    s.position = 'absolute';
    s.pointerEvents = 'none';
    s.display = 'none';
    return tip;
  }

  // Tooltip lines for index `i`: [interval, line...], each a plain string (textContent only:
  // labels come from devices and people).
  function tipLines(chart, i) {
    var d = chart.data;
    var unit = d.unit ? ' ' + d.unit : '';
    var cur = null;
    var prev = null;
    d.series.forEach(function (s) {
      if (s.role === 'previous') {
        prev = s;
      } else if (!cur) {
        cur = s;
      }
    });
    var lines = [];
    if (!cur) {
      return lines;
    }
    var v = cur.values[i];
    var q = cur.quality ? cur.quality[i] : '';
    if (chart.kind === 'share') {
      lines.push(String(d.x[i]));
      lines.push(digits(v) + unit);
      return lines;
    }
    lines.push(cur.intervals[i] || String(d.x[i]));
    lines.push(
      (chart.kind === 'power' ? 'Mean power: ' : cur.label + ': ') +
        (v === null || v === undefined ? 'no value' : digits(v) + unit) +
        (q ? ' (' + q + ')' : '')
    );
    if (prev && prev.values[i] !== null && prev.values[i] !== undefined) {
      lines.push(
        prev.label + ', ' + prev.intervals[i] + ': ' + digits(prev.values[i]) + unit +
          (prev.quality && prev.quality[i] ? ' (' + prev.quality[i] + ')' : '')
      );
    } else if (prev) {
      lines.push(prev.label + ': no value');
    }
    return lines;
  }

  function showTip(chart, u) {
    var tip = chart.tip;
    var i = u.cursor.idx;
    if (i === null || i === undefined || u.cursor.left < 0) {
      tip.style.display = 'none';
      return;
    }
    var lines = tipLines(chart, i);
    var key = i + '|' + lines.join('|');
    if (tip.__key !== key) {
      tip.__key = key;
      while (tip.firstChild) {
        tip.removeChild(tip.firstChild);
      }
      lines.forEach(function (line, n) {
        var row = el(n === 0 ? 'strong' : 'div', null, line);
        if (n === 0) {
          row.style.display = 'block';
        }
        tip.appendChild(row);
      });
    }
    tip.style.display = 'block';
    // Within the chart: the plot area starts `offsetLeft` into it; the tooltip may use the
    // axis' room but never leaves the chart (no horizontal scrolling on a phone).
    var before = u.over.offsetLeft;
    var overW = u.over.clientWidth;
    var overH = u.over.clientHeight;
    var room = overW + before - 4;
    tip.style.maxWidth = room < 256 ? Math.max(120, room) + 'px' : '';
    var w = tip.offsetWidth;
    var h = tip.offsetHeight;
    var left = u.cursor.left + 12;
    if (left + w > overW) {
      left = u.cursor.left - w - 12;
    }
    left = Math.max(-before, Math.min(left, overW - w));
    var top = Math.max(0, Math.min(u.cursor.top - h - 8, overH - h));
    if (u.cursor.top < 0 || isNaN(top)) {
      top = 0;
    }
    tip.style.left = left + 'px';
    tip.style.top = top + 'px';
  }

  // ---- axes ------------------------------------------------------------------------------

  // Splits of an index axis at whole labels: every `step` points, hours first on the power
  // graph (its labels are local times "HH:MM", so the ticks need no time zone).
  function indexSplits(chart) {
    return function (u, axisIdx, min, max) {
      var n = chart.labels.length;
      var first = Math.max(0, Math.ceil(min));
      var last = Math.min(n - 1, Math.floor(max));
      var space = chart.kind === 'share' ? 24 : Math.max(48, chart.labelChars * 7 + 18);
      var dim = chart.kind === 'share' ? u.bbox.height : u.bbox.width;
      var room = Math.max(1, Math.floor(dim / (window.devicePixelRatio || 1) / space));
      var count = last - first + 1;
      if (chart.kind === 'share') {
        room = count;
      }
      var steps = chart.kind === 'power' ? [1, 2, 4, 8, 12, 16, 24, 48, 96, 192, 384, 672, 1344, 2688]
        : [1, 2, 3, 5, 7, 10, 14, 20, 30, 50, 100];
      var step = steps[steps.length - 1];
      for (var k = 0; k < steps.length; k++) {
        if (count / steps[k] <= room) {
          step = steps[k];
          break;
        }
      }
      var start = first;
      if (chart.kind === 'power' && step >= 4) {
        while (start <= last && !/:00$/.test(chart.labels[start] || '')) {
          start++;
        }
        if (start > last) {
          start = first;
        }
      }
      var out = [];
      for (var i = start; i <= last; i += step) {
        out.push(i);
      }
      return out;
    };
  }

  function indexValues(chart) {
    return function (u, splits) {
      return splits.map(function (i) {
        var label = chart.labels[Math.round(i)];
        label = label === undefined ? '' : String(label);
        if (chart.kind === 'share' && label.length > 24) {
          label = label.slice(0, 23) + '…';
        }
        return label;
      });
    };
  }

  // ---- building --------------------------------------------------------------------------

  function fullRange(chart) {
    return [-0.5, chart.labels.length - 0.5];
  }

  function isZoomed(chart, u) {
    var full = fullRange(chart);
    var sc = u.scales.x;
    return sc.min > full[0] + 1e-6 || sc.max < full[1] - 1e-6;
  }

  function buildOptions(chart, width) {
    var d = chart.data;
    var colors = palette();
    var n = chart.labels.length;
    var kind = chart.kind;
    var share = kind === 'share';
    var series = [{}];
    var data = [chart.labels.map(function (_, i) { return i; })];
    var hasPrevious = false;

    d.series.forEach(function (s) {
      if (s.role === 'previous') {
        if (!s.values.some(function (v) { return v !== null && v !== undefined; })) {
          return;
        }
        hasPrevious = true;
        series.push({
          label: s.label,
          stroke: colors.previous,
          fill: colors.previous,
          width: 0,
          points: { show: false },
          paths: uPlot.paths.bars({ size: [0.42, 60], align: -1 })
        });
        data.push(s.values);
      }
    });
    d.series.forEach(function (s) {
      if (s.role === 'previous') {
        return;
      }
      // Measured (solid) and estimated or incomplete (lighter) values as two series.
      var solid = s.values.map(function (v, i) {
        var q = s.quality ? s.quality[i] : '';
        return q === 'estimated' || q === 'incomplete' ? null : v;
      });
      var light = s.values.map(function (v, i) {
        var q = s.quality ? s.quality[i] : '';
        return q === 'estimated' || q === 'incomplete' ? v : null;
      });
      var bars = share ? { size: [0.7, 28], align: 0 }
        : kind === 'power' ? { size: [0.92, Infinity], align: 0 }
        : hasPrevious ? { size: [0.42, 60], align: 1 } : { size: [0.7, 80], align: 0 };
      series.push({
        label: s.label,
        stroke: colors.current,
        fill: colors.current,
        width: 0,
        points: { show: false },
        paths: uPlot.paths.bars(bars)
      });
      data.push(solid);
      series.push({
        label: s.label + ' (estimated or incomplete)',
        stroke: colors.current,
        fill: hatch(colors.current),
        width: 1,
        points: { show: false },
        paths: uPlot.paths.bars(bars)
      });
      data.push(light);
    });

    var axisFont = '12px system-ui, sans-serif';
    var xAxis = {
      stroke: colors.text,
      font: axisFont,
      grid: { show: false },
      ticks: { stroke: colors.grid },
      splits: indexSplits(chart),
      values: indexValues(chart)
    };
    var yAxis = {
      stroke: colors.text,
      font: axisFont,
      label: d.unit || '',
      labelFont: axisFont,
      grid: { stroke: colors.grid, width: 1 },
      ticks: { stroke: colors.grid },
      values: function (u, splits) {
        return splits.map(function (v) { return digits(v); });
      }
    };
    if (share) {
      xAxis.side = 3;
      xAxis.size = Math.min(200, Math.round(width * 0.4));
      yAxis.side = 2;
    }

    var opts = {
      width: width,
      height: heightFor(kind, width, n),
      legend: { show: false },
      padding: [12, 12, 0, 0],
      scales: {
        x: {
          time: false,
          ori: share ? 1 : 0,
          // Shares read top to bottom, in the table's order.
          dir: share ? -1 : 1,
          range: function (u, min, max) {
            if (kind !== 'power' || min === null || max === null || (min <= 0 && max >= n - 1)) {
              return fullRange(chart);
            }
            return [min, max];
          }
        },
        y: {
          ori: share ? 0 : 1,
          dir: 1,
          range: function (u, min, max) {
            var lo = min === null || !isFinite(min) ? 0 : Math.min(0, min);
            return [lo === 0 ? 0 : -niceMax(-lo), niceMax(max === null ? 0 : max)];
          }
        }
      },
      axes: [xAxis, yAxis],
      series: series,
      cursor: {
        x: kind === 'power',
        y: false,
        points: { show: false },
        drag: kind === 'power' ? { x: true, y: false, setScale: true } : { x: false, y: false, setScale: false }
      },
      hooks: {
        setCursor: [function (u) { showTip(chart, u); }],
        setScale: [function (u, key) {
          if (key === 'x' && chart.reset) {
            setHidden(chart.reset, !isZoomed(chart, u));
          }
        }],
        draw: [function (u) { markMissing(chart, u, colors.bad); }]
      }
    };
    return { opts: opts, data: data };
  }

  // A short mark under each missing value, as the SVG's "–".
  function markMissing(chart, u, color) {
    if (chart.kind === 'share') {
      return;
    }
    var cur = null;
    chart.data.series.forEach(function (s) {
      if (s.role !== 'previous' && !cur) {
        cur = s;
      }
    });
    if (!cur) {
      return;
    }
    var ctx = u.ctx;
    var bb = u.bbox;
    var col = Math.max(2, bb.width / Math.max(1, u.scales.x.max - u.scales.x.min) * 0.6);
    ctx.save();
    ctx.fillStyle = color;
    for (var i = 0; i < cur.values.length; i++) {
      var upcoming = cur.quality && cur.quality[i] === 'still to come';
      if ((cur.values[i] === null || cur.values[i] === undefined) && !upcoming) {
        if (i < u.scales.x.min || i > u.scales.x.max) {
          continue;
        }
        var x = u.valToPos(i, 'x', true);
        ctx.fillRect(x - col / 2, bb.top + bb.height - 3 * (window.devicePixelRatio || 1), col, 3 * (window.devicePixelRatio || 1));
      }
    }
    ctx.restore();
  }

  // Diagonal stripes, like the SVG's hatched bars: estimated or incomplete values.
  function hatch(color) {
    var dpr = window.devicePixelRatio || 1;
    var d = Math.round(6 * dpr);
    var c = document.createElement('canvas');
    c.width = c.height = d;
    var g = c.getContext('2d');
    if (!g) {
      return color;
    }
    g.strokeStyle = color;
    g.lineWidth = 2 * dpr;
    g.beginPath();
    g.moveTo(-d, d);
    g.lineTo(d, -d);
    g.moveTo(0, d);
    g.lineTo(d, 0);
    g.moveTo(0, 2 * d);
    g.lineTo(2 * d, 0);
    g.stroke();
    return g.createPattern(c, 'repeat') || color;
  }

  function legend(chart, colors) {
    var box = el('div', 'chart-legend');
    box.setAttribute('aria-hidden', 'true');
    box.style.display = 'flex';
    box.style.flexWrap = 'wrap';
    box.style.gap = '0.25em 1em';
    box.style.fontSize = '0.85rem';
    var items = [];
    chart.data.series.forEach(function (s) {
      if (s.role === 'previous') {
        if (s.values.some(function (v) { return v !== null && v !== undefined; })) {
          items.push([s.label, colors.previous, 1]);
        }
      } else {
        items.push([chart.kind === 'power' ? 'Measured' : s.label, colors.current, 1]);
        if (s.quality && s.quality.some(function (q) { return q === 'estimated' || q === 'incomplete'; })) {
          items.push([chart.kind === 'power' ? 'Estimated' : 'Incomplete', colors.current, 'hatch']);
        }
        if (s.values.some(function (v) { return v === null || v === undefined; })) {
          items.push(['Missing', colors.bad, 1]);
        }
      }
    });
    if (items.length < 2) {
      return null;
    }
    items.forEach(function (it) {
      var item = el('span', 'chart-legend-item');
      var sw = el('span', 'chart-swatch');
      sw.style.display = 'inline-block';
      sw.style.width = '0.9em';
      sw.style.height = '0.9em';
      sw.style.marginRight = '0.35em';
      sw.style.verticalAlign = '-0.1em';
      if (it[2] === 'hatch') {
        sw.style.background = 'repeating-linear-gradient(135deg, ' + it[1] + ' 0 2px, transparent 2px 5px)';
        sw.style.border = '1px solid ' + it[1];
        sw.style.boxSizing = 'border-box';
      } else {
        sw.style.background = it[1];
      }
      item.appendChild(sw);
      item.appendChild(document.createTextNode(it[0]));
      box.appendChild(item);
    });
    return box;
  }

  function mount(chart) {
    var fig = chart.figure;
    var width = Math.max(240, fig.clientWidth || 600);
    var built = buildOptions(chart, width);
    var colors = palette();
    chart.holder = el('div', 'chart-live-box');
    chart.holder.style.position = 'relative';
    fig.appendChild(chart.holder);
    var u = new uPlot(built.opts, built.data, chart.holder);
    chart.u = u;
    fig.__chart = u;
    // Inside the uPlot root, so the print rule that hides `.uplot` hides the legend too.
    var lg = legend(chart, colors);
    if (lg) {
      u.root.insertBefore(lg, u.root.firstChild);
    }
    chart.tip = makeTip();
    u.over.appendChild(chart.tip);
    bindTouch(chart, u);
    u.over.addEventListener('mouseleave', function () {
      chart.tip.style.display = 'none';
    });
    if (chart.reset) {
      setHidden(chart.reset, !isZoomed(chart, u));
    }
  }

  function unmount(chart) {
    if (chart.u) {
      chart.u.destroy();
      chart.u = null;
    }
    if (chart.holder && chart.holder.parentNode) {
      chart.holder.parentNode.removeChild(chart.holder);
    }
  }

  // A tap or a drag on a touch screen moves the cursor (and so the tooltip); vertical
  // swipes still scroll the page.
  function bindTouch(chart, u) {
    var over = u.over;
    over.style.touchAction = 'pan-y';
    function move(e) {
      var t = e.touches && e.touches[0];
      if (!t) {
        return;
      }
      var r = over.getBoundingClientRect();
      var left = t.clientX - r.left;
      var top = t.clientY - r.top;
      if (left < 0 || top < 0 || left > r.width || top > r.height) {
        return;
      }
      u.setCursor({ left: left, top: top });
    }
    over.addEventListener('touchstart', move, { passive: true });
    over.addEventListener('touchmove', move, { passive: true });
  }

  function upgrade(fig) {
    if (fig.__chartState) {
      return;
    }
    var block = fig.querySelector('script.chart-data');
    if (!block) {
      return;
    }
    var data;
    try {
      data = JSON.parse(block.textContent);
    } catch (e) {
      return;
    }
    var kind = fig.getAttribute('data-chart') || 'bars';
    var chart = {
      figure: fig,
      kind: kind,
      data: data,
      labels: kind === 'power' && data.labels ? data.labels : data.x || []
    };
    if (!chart.labels.length) {
      return;
    }
    chart.labelChars = chart.labels.reduce(function (m, l) {
      return Math.max(m, String(l).length);
    }, 0);
    if (kind === 'power') {
      var reset = el('button', 'chart-reset secondary', 'Reset zoom');
      reset.type = 'button';
      setHidden(reset, true);
      reset.addEventListener('click', function () {
        var full = fullRange(chart);
        chart.u.setScale('x', { min: full[0], max: full[1] });
      });
      fig.appendChild(reset);
      chart.reset = reset;
    }
    try {
      mount(chart);
    } catch (e) {
      // The SVG stays: better a static chart than none.
      unmount(chart);
      fig.__chart = null;
      if (chart.reset && chart.reset.parentNode) {
        chart.reset.parentNode.removeChild(chart.reset);
      }
      return;
    }
    fig.__chartState = chart;
    fig.classList.add('chart-live');
    charts.push(chart);
  }

  function resizeAll() {
    charts.forEach(function (chart) {
      if (!chart.u) {
        return;
      }
      var width = Math.max(240, chart.figure.clientWidth || 600);
      if (width !== chart.u.width) {
        chart.u.setSize({ width: width, height: heightFor(chart.kind, width, chart.labels.length) });
      }
    });
  }

  // Colours come from CSS custom properties: rebuilt when the colour scheme changes.
  function recolour() {
    charts.forEach(function (chart) {
      var zoom = chart.u && isZoomed(chart, chart.u) ? [chart.u.scales.x.min, chart.u.scales.x.max] : null;
      unmount(chart);
      mount(chart);
      if (zoom) {
        chart.u.setScale('x', { min: zoom[0], max: zoom[1] });
      }
    });
  }

  function init() {
    var figures = document.querySelectorAll('figure.chart');
    for (var i = 0; i < figures.length; i++) {
      upgrade(figures[i]);
    }
    var pending = false;
    window.addEventListener('resize', function () {
      if (pending) {
        return;
      }
      pending = true;
      window.requestAnimationFrame(function () {
        pending = false;
        resizeAll();
      });
    });
    if (window.matchMedia) {
      var mq = window.matchMedia('(prefers-color-scheme: dark)');
      if (mq.addEventListener) {
        mq.addEventListener('change', recolour);
      } else if (mq.addListener) {
        mq.addListener(recolour);
      }
    }
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
})();
