// redline report: the item list (filtered, paginated) and an item's details, drawn on
// demand from the JSON embedded in the page. Every text from the results goes into the
// page as a text node (textContent), never as HTML.
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var DATA = JSON.parse(document.getElementById("redline-data").textContent);
  var ITEMS = DATA.items;
  var METHODS = DATA.methods;
  var COMPARE = DATA.kind === "compare";
  var PAGE = 50;
  var state = { q: "", stop: "", outcome: "", method: "", min: "", max: "", page: 1, item: "" };
  var haystacks = null;
  var shown = [];

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      parent.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return parent;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS(SVGNS, tag);
    for (var k in attrs) node.setAttribute(k, String(attrs[k]));
    return node;
  }
  function fmt(x, digits) {
    if (x === null || x === undefined) return "–";
    if (typeof x !== "number") return String(x);
    if (Number.isInteger(x) && digits === undefined) return x.toLocaleString("en");
    return x.toFixed(digits === undefined ? 2 : digits);
  }
  function score(x) { return x === null || x === undefined ? "–" : fmt(x, 2); }
  function tokens(u) { return u["in"] + u.out; }
  function badge(text, cls) { return el("span", "badge " + (cls || text), text); }

  // --- state in the location hash (#q=..&stop=..&item=..), so a view can be linked ---
  function readHash() {
    var params = new URLSearchParams(location.hash.slice(1));
    for (var key in state) {
      if (params.has(key)) state[key] = key === "page" ? (parseInt(params.get(key), 10) || 1) : params.get(key);
    }
  }
  function writeHash() {
    var params = new URLSearchParams();
    for (var key in state) if (state[key] && !(key === "page" && state[key] === 1)) params.set(key, state[key]);
    try { history.replaceState(null, "", "#" + params.toString()); } catch (e) { /* file:// in some browsers */ }
  }

  // --- filtering ---
  function entriesOf(item) {
    return state.method ? item.e.filter(function (e) { return e.m === state.method; }) : item.e;
  }
  function haystack(k) {
    if (haystacks === null) {
      haystacks = ITEMS.map(function (item) {
        var parts = [item.id];
        item.e.forEach(function (e) {
          parts.push(e.prompt);
          e.rounds.forEach(function (r) { r.cands.forEach(function (c) { parts.push(c.text); }); });
        });
        return parts.join("\n").toLowerCase();
      });
    }
    return haystacks[k];
  }
  function entryMatches(e) {
    if (state.stop && e.stop !== state.stop) return false;
    var o = state.outcome;
    if (o === "solved" && !e.ok) return false;
    if (o === "unsolved" && e.ok) return false;
    if (o === "error" && e.stop !== "error") return false;
    var moved = e.best === null || e.draft === null ? null : e.best - e.draft;
    if (o === "improved" && !(moved > 0)) return false;
    if (o === "regressed" && !(moved < 0)) return false;
    if (o === "unchanged" && moved !== 0) return false;
    if (state.min !== "" && !(e.best !== null && e.best >= parseFloat(state.min))) return false;
    if (state.max !== "" && !(e.best !== null && e.best <= parseFloat(state.max))) return false;
    return true;
  }
  function filter() {
    var q = state.q.trim().toLowerCase();
    shown = [];
    for (var k = 0; k < ITEMS.length; k++) {
      var entries = entriesOf(ITEMS[k]);
      if (!entries.length || !entries.some(entryMatches)) continue;
      if (q && haystack(k).indexOf(q) < 0) continue;
      shown.push(k);
    }
  }

  // --- plots drawn per item ---
  function trajectory(e, width, height, cls) {
    var pad = cls === "spark" ? 3 : 24;
    var last = Math.max(1, e.rounds.length - 1);
    var box = svg("svg", { "class": "plot " + cls, width: width, height: height,
                           viewBox: "0 0 " + width + " " + height, role: "img",
                           "aria-label": "score per round" });
    function x(i) { return pad + (width - 2 * pad) * i / last; }
    function y(s) { return height - pad - (height - 2 * pad) * s; }
    if (cls !== "spark") {
      box.appendChild(svg("rect", { "class": "frame", x: pad, y: pad, width: width - 2 * pad, height: height - 2 * pad }));
      [0, 0.5, 1].forEach(function (s) {
        var t = svg("text", { "class": "tick", x: pad - 4, y: y(s) + 4, "text-anchor": "end" });
        t.textContent = String(s);
        box.appendChild(t);
      });
      e.rounds.forEach(function (r, i) {
        var t = svg("text", { "class": "tick", x: x(i), y: height - pad + 13, "text-anchor": "middle" });
        t.textContent = String(r.i);
        box.appendChild(t);
      });
    }
    box.appendChild(svg("line", { "class": "thr", x1: pad, x2: width - pad, y1: y(e.thr), y2: y(e.thr) }));
    var line = [];
    e.rounds.forEach(function (r, i) {
      var top = null;
      r.cands.forEach(function (c) {
        if (!c.unscored && (top === null || c.score > top)) top = c.score;
      });
      if (top !== null) line.push(x(i).toFixed(1) + "," + y(top).toFixed(1));
    });
    if (line.length) box.appendChild(svg("polyline", { "class": "tl", points: line.join(" ") }));
    e.rounds.forEach(function (r, i) {
      r.cands.forEach(function (c) {
        var kind = c.unscored ? "tp unscored" : c.id === e.bestId ? "tp best" : "tp";
        var dot = svg("circle", { "class": kind, cx: x(i), cy: y(c.unscored ? 0 : c.score), r: cls === "spark" ? 2 : 4 });
        var tip = svg("title", {});
        tip.textContent = "round " + r.i + ": " + (c.unscored ? "unscored" : score(c.score));
        dot.appendChild(tip);
        box.appendChild(dot);
      });
    });
    return box;
  }

  // --- the item list ---
  function renderList() {
    filter();
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    if (state.page > pages) state.page = pages;
    if (state.page < 1) state.page = 1;
    var start = (state.page - 1) * PAGE;
    var body = document.querySelector("#item-table tbody");
    body.textContent = "";
    shown.slice(start, start + PAGE).forEach(function (k) { body.appendChild(row(ITEMS[k])); });
    document.getElementById("count").textContent = shown.length
      ? "Items " + (start + 1) + "–" + Math.min(start + PAGE, shown.length) + " of " + shown.length +
        (shown.length !== ITEMS.length ? " matching (" + ITEMS.length + " in all)" : "")
      : "No item matches (" + ITEMS.length + " in all).";
    document.getElementById("page").textContent = "page " + state.page + " of " + pages;
    document.getElementById("prev").disabled = state.page <= 1;
    document.getElementById("next").disabled = state.page >= pages;
    writeHash();
  }
  function row(item) {
    var tr = el("tr");
    tr.setAttribute("data-id", item.id);
    if (item.id === state.item) tr.className = "open";
    add(tr, add(el("td"), el("span", "id", item.id)));
    var first = item.e[0];
    add(tr, add(el("td", "snippet"), first.prompt));
    if (COMPARE) {
      METHODS.forEach(function (m) {
        var e = item.e.filter(function (x) { return x.m === m; })[0];
        var td = el("td", "mark");
        if (!e) td.textContent = "·";
        else add(td, badge(e.ok ? "✓" : "✗", e.ok ? "yes" : "no"));
        tr.appendChild(td);
      });
    } else {
      add(tr, add(el("td"), badge(first.stop)));
      add(tr, el("td", "num", score(first.draft) + " → " + score(first.best)));
      add(tr, el("td", "num", fmt(Math.max(first.rounds.length - 1, 0))));
      add(tr, el("td", "num", fmt(tokens(first.usage))));
      add(tr, add(el("td"), trajectory(first, 90, 22, "spark")));
    }
    tr.addEventListener("click", function () { open(item.id); });
    return tr;
  }

  // --- an item's details ---
  function open(id) {
    state.item = id;
    var item = ITEMS.filter(function (x) { return x.id === id; })[0];
    var detail = document.getElementById("detail");
    detail.textContent = "";
    document.querySelectorAll("#item-table tbody tr").forEach(function (tr) {
      tr.className = tr.getAttribute("data-id") === id ? "open" : "";
    });
    writeHash();
    if (!id) return;
    var close = el("button", "close", "×");
    close.type = "button";
    close.title = "close (Esc)";
    close.addEventListener("click", function () { open(""); });
    detail.appendChild(close);
    if (!item) { add(detail, el("p", "muted", "No item with id " + id + ".")); return; }
    add(detail, add(el("h2"), "Item ", el("span", "id", item.id)));
    add(detail, add(el("details"), el("summary", null, "Task"), el("pre", "prompt", item.e[0].prompt)));
    if (COMPARE) detail.appendChild(methodTable(item));
    item.e.forEach(function (e) { detail.appendChild(entry(e)); });
    detail.scrollTop = 0;
  }
  function methodTable(item) {
    var table = el("table", "methods-of-item");
    add(table, add(el("tr"), el("th", null, "method"), el("th", null, "correct"), el("th", null, "draft correct"),
                   el("th", null, "stop"), el("th", "num", "draft → best"), el("th", "num", "tokens")));
    item.e.forEach(function (e) {
      add(table, add(el("tr"), el("td", null, e.m), el("td", null, e.correct === null ? "–" : e.correct ? "yes" : "no"),
                     el("td", null, e.dc === null ? "–" : e.dc ? "yes" : "no"), add(el("td"), badge(e.stop)),
                     el("td", "num", score(e.draft) + " → " + score(e.best)), el("td", "num", fmt(tokens(e.usage)))));
    });
    return table;
  }
  function usageTable(e) {
    var table = el("table", "usage");
    add(table, add(el("tr"), el("th", null, "round"), el("th", "num", "candidates"), el("th", "num", "input tok"),
                   el("th", "num", "output tok"), el("th", "num", "calls"), el("th", "num", "cost $"), el("th", "num", "seconds")));
    function line(name, n, u, cls) {
      add(table, add(el("tr", cls), el("td", null, name), el("td", "num", n), el("td", "num", fmt(u["in"])),
                     el("td", "num", fmt(u.out)), el("td", "num", fmt(u.calls)), el("td", "num", u.cost.toFixed(4)),
                     el("td", "num", u.s.toFixed(2))));
    }
    e.rounds.forEach(function (r) { line(String(r.i), String(r.cands.length), r.usage); });
    line("total", "", e.usage, "total");
    return table;
  }
  function entry(e) {
    var box = el("div", "entry");
    var head = add(el("h3"), e.m ? e.m + " " : "", badge(e.stop), " ",
                   el("span", "muted", "draft " + score(e.draft) + " → best " + score(e.best) + " (threshold " + e.thr + ")"));
    add(box, head, el("p", "stop-detail muted", e.detail));
    if (e.error) add(box, el("pre", "error-text", e.error));
    add(box, trajectory(e, 360, 160, "trajectory"));
    add(box, el("h4", null, "Usage per round"), usageTable(e));
    if (e.memory.length) {
      var list = el("ol", "memory");
      e.memory.forEach(function (m) { add(list, el("li", null, m)); });
      add(box, el("h4", null, "Memory at the end"), list);
    }
    e.rounds.forEach(function (r) {
      add(box, el("h4", "round", r.i === 0 ? "Round 0 (draft)" : "Round " + r.i));
      r.cands.forEach(function (c) { box.appendChild(candidate(e, c)); });
      if (r.refl) add(box, add(el("div", "reflection"), el("strong", null, "Reflection"), el("pre", null, r.refl)));
    });
    return box;
  }
  function candidate(e, c) {
    var box = el("div", "cand" + (c.id === e.bestId ? " best" : ""));
    var tags = [c.origin, c.unscored ? "unscored" : "score " + score(c.score)];
    if (!c.gates) tags.push("gate failed");
    if (c.failed) tags.push("flagged");
    if (c.id === e.bestId) tags.push("best");
    if (c.id === e.finalId) tags.push("final");
    add(box, add(el("div", "cand-head"), el("span", "id", c.id), " ", el("span", "muted", tags.join(" · ") +
      (c.parent ? " · from " + c.parent : "") + " · " + fmt(tokens(c.usage)) + " tok")));
    if (c.expl) {
      var expl = add(el("details", "explanation"), el("summary", null, "Reviser's explanation"), el("pre", null, c.expl));
      expl.open = true;
      box.appendChild(expl);
    }
    if (c.diff !== null) {
      var pre = el("pre", "diff");
      if (!c.diff) pre.textContent = "(no change from its parent)";
      c.diff.split("\n").forEach(function (l) {
        if (!c.diff) return;
        var kind = l.charAt(0) === "+" ? "add" : l.charAt(0) === "-" ? "del" : l.slice(0, 2) === "@@" ? "hunk" : "ctx";
        add(pre, el("span", kind, l));
      });
      add(box, el("div", "muted", "Diff from its parent"), pre);
      add(box, add(el("details"), el("summary", null, "Full text"), el("pre", "text", c.text)));
    } else {
      add(box, el("pre", "text", c.text));
    }
    c.crit.forEach(function (k) {
      var div = el("div", "critique");
      var verdict = k.passed === null ? "" : k.passed ? " · passed" : " · failed";
      add(div, el("strong", null, k.critic), " ", el("span", "muted", "score " + score(k.score) + verdict +
        (k.raw === null ? "" : " · raw " + fmt(k.raw)) + (k.usage.calls ? " · " + fmt(tokens(k.usage)) + " tok" : "")));
      if (k.feedback) add(div, el("pre", "feedback", k.feedback));
      if (k.ev) {
        var ev = add(el("details", "evidence"), el("summary", null, "Evidence"), el("pre", null, JSON.stringify(k.ev, null, 2)));
        ev.open = true;
        div.appendChild(ev);
      }
      box.appendChild(div);
    });
    return box;
  }

  // --- controls ---
  function control(id, key) {
    var node = document.getElementById(id);
    node.value = state[key];
    node.addEventListener("input", function () { state[key] = node.value; state.page = 1; renderList(); });
  }
  var stops = {};
  ITEMS.forEach(function (item) { item.e.forEach(function (e) { stops[e.stop] = true; }); });
  var stopSelect = document.getElementById("f-stop");
  Object.keys(stops).sort().forEach(function (s) { var o = el("option", null, s); o.value = s; stopSelect.appendChild(o); });
  var methodSelect = document.getElementById("f-method");
  if (COMPARE) {
    METHODS.forEach(function (m) { var o = el("option", null, m); o.value = m; methodSelect.appendChild(o); });
  } else {
    methodSelect.parentNode.removeChild(methodSelect);
  }
  readHash();
  control("f-q", "q"); control("f-stop", "stop"); control("f-outcome", "outcome"); control("f-min", "min"); control("f-max", "max");
  if (COMPARE) control("f-method", "method");
  document.getElementById("prev").addEventListener("click", function () { state.page -= 1; renderList(); });
  document.getElementById("next").addEventListener("click", function () { state.page += 1; renderList(); });
  document.addEventListener("keydown", function (event) { if (event.key === "Escape") open(""); });
  renderList();
  if (state.item) open(state.item);
  document.body.setAttribute("data-ready", "1");
})();
