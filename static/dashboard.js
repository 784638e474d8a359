/* flask-notify-emergency dashboard: keeps the server-rendered pages current.
 *
 * Live: the admin Socket.IO namespace pushes the overview every few seconds and on every
 * change. The page counts as live only while pushes arrive: a socket that is connected but
 * silent (a dead message queue drops emits, ping/pong goes on) is as good as none. Then the
 * page polls the JSON API instead, and says so ("polling"). Forms are plain HTML posts, so
 * every action works with the socket, the script, or both, gone.
 *
 * All text from the server is set with textContent: nothing it sends is parsed as HTML. */
(function () {
  "use strict";
  var el = document.getElementById("ne-dashboard-settings");
  if (!el) { return; }
  var settings = JSON.parse(el.textContent);
  var refreshMs = Math.max(500, (settings.refreshSeconds || 5) * 1000);
  var staleMs = refreshMs * 2.5 + 1000;
  var OVERVIEW_EVENT = "notify_emergency_admin:overview";
  var SUBSCRIBE_EVENT = "notify_emergency_admin:subscribe";
  var state = "connecting";
  var lastPush = 0;
  var pollTimer = null;
  var socket = null;
  var SVG = "http://www.w3.org/2000/svg";

  // -- formatting (mirrors the server's filters) -----------------------------------------
  function fmt(value, kind) {
    if (kind === "text") { return value === null || value === undefined ? "" : String(value); }
    if (kind === "list") { return (value || []).join(", "); }
    if (kind === "mode") { return "mode: " + value; }
    if (kind === "breaker") { return "breaker: " + value; }
    if (kind === "paused") { return "real-time: " + (value ? "paused (fallback on)" : "on"); }
    if (value === null || value === undefined) { return "\u2013"; }
    if (kind === "percent") { return (value * 100).toFixed(1) + "%"; }
    if (kind === "ms") { return Number(value).toFixed(1) + " ms"; }
    if (kind === "updown") { return value ? "up" : "down"; }
    if (kind === "time") { return String(value).slice(11, 19); }
    if (kind === "seconds") {
      var v = Number(value);
      if (v < 120) { return Math.round(v) + " s"; }
      if (v < 7200) { return (v / 60).toFixed(1) + " min"; }
      return (v / 3600).toFixed(1) + " h";
    }
    return String(value);
  }
  function lookup(data, path) {
    return path.split(".").reduce(function (obj, key) {
      return obj === null || obj === undefined ? undefined : obj[key];
    }, data);
  }
  function node(tag, text, cls) {
    var n = document.createElement(tag);
    if (text !== undefined && text !== null) { n.textContent = String(text); }
    if (cls) { n.className = cls; }
    return n;
  }
  function when(iso) { return iso ? String(iso).slice(0, 19).replace("T", " ") + " UTC" : "\u2013"; }

  // -- the live / polling indicator ------------------------------------------------------
  function setState(next) {
    state = next;
    document.documentElement.dataset.neDashboard = next;
    var ind = document.getElementById("ne-live");
    if (!ind) { return; }
    ind.dataset.state = next;
    ind.textContent = next === "live" ? "live" :
      next === "polling" ? "polling every " + Math.round(refreshMs / 1000) + " s" : "connecting\u2026";
  }

  // -- applying an overview --------------------------------------------------------------
  function apply(data) {
    if (!data) { return; }
    document.querySelectorAll("[data-metric]").forEach(function (n) {
      var value = lookup(data, n.dataset.metric);
      if (value === undefined && !/^(mode|breaker|paused)/.test(n.dataset.metric)) { return; }
      n.textContent = fmt(value, n.dataset.format || "int");
    });
    var mode = data.mode;
    var paused = !!(data.paused && data.paused.realtime);
    document.querySelectorAll("[data-format=mode]").forEach(function (n) { n.className = "ne-badge ne-mode-" + mode; });
    document.querySelectorAll("[data-format=breaker]").forEach(function (n) { n.className = "ne-badge ne-breaker-" + data.breaker; });
    document.querySelectorAll("[data-format=paused]").forEach(function (n) { n.className = "ne-badge" + (paused ? " ne-paused" : ""); });
    toggle("ne-form-activate", mode === "emergency");
    toggle("ne-form-deactivate", !(mode === "emergency" || data.current_event));
    toggle("ne-form-fallback-on", paused);
    toggle("ne-form-fallback-off", !paused);
    cards(data);
    currentEvent(data.current_event);
    if (data.dashboard_status !== undefined) { teamStatus(data.dashboard_status); }
    if (data.delivery) { chart(data.delivery.series); }
    if (data.recent_audit) { audit(data.recent_audit); }
  }
  function toggle(id, hide) {
    var f = document.getElementById(id);
    if (f) { f.hidden = !!hide; }
  }
  function cards(data) {
    var card = document.querySelector("[data-card=delivery]");
    if (card && data.delivery) { card.dataset.rate = data.delivery.success_rate === null ? "" : data.delivery.success_rate; }
    card = document.querySelector("[data-card=database]");
    if (card) { card.dataset.ok = data.database && data.database.ok ? "yes" : "no"; }
    card = document.querySelector("[data-card=health]");
    if (card && data.health) { card.dataset.status = data.health.status || ""; }
    document.querySelectorAll("[data-card][data-rate-bad]").forEach(function (c) {
      var r = c.dataset.rate === "" ? null : Number(c.dataset.rate);
      c.dataset.level = r === null ? "" : r < Number(c.dataset.rateBad) ? "bad" : r < Number(c.dataset.rateWarn) ? "warn" : "ok";
    });
  }
  // -- live regions: rebuilt off the page and swapped in only when what they say changed, so a
  // refresh that brings the same data is not read out again by a screen reader
  function normalText(el) { return el.textContent.replace(/\s+/g, " ").trim(); }
  function swapIfChanged(id, fill) {
    var box = document.getElementById(id);
    if (!box) { return; }
    var fresh = box.cloneNode(false);
    fill(fresh);
    Array.prototype.forEach.call(fresh.attributes, function (a) {
      if (box.getAttribute(a.name) !== a.value) { box.setAttribute(a.name, a.value); }
    });
    if (normalText(fresh) === normalText(box)) { return; }
    box.replaceChildren.apply(box, Array.prototype.slice.call(fresh.childNodes));
  }
  function currentEvent(ev) { swapIfChanged("ne-current-event", function (box) { fillCurrentEvent(box, ev); }); }
  function teamStatus(team) { swapIfChanged("ne-team-status", function (box) { fillTeamStatus(box, team); }); }
  function rollbackStatus(status) {
    if (status) { swapIfChanged("ne-rollback-status", function (box) { fillRollbackStatus(box, status); }); }
  }
  function fillCurrentEvent(box, ev) {
    box.dataset.open = ev ? "yes" : "no";
    if (!ev) { box.appendChild(node("strong", "No open emergency.")); return; }
    var head = node("strong", "Emergency: event ");
    var link = node("a", "#" + ev.id);
    link.href = (settings.eventUrl || location.pathname.replace(/\/$/, "") + "/events/") + encodeURIComponent(ev.id);
    head.appendChild(link);
    head.appendChild(document.createTextNode(", level " + ev.level + " (" + ev.level_name + ")"));
    box.appendChild(head);
    box.appendChild(document.createTextNode(" "));
    box.appendChild(node("span", ev.reason || "", "ne-reason"));
    box.appendChild(document.createTextNode(" "));
    box.appendChild(node("span", "since " + when(ev.detected_at) + " \u00b7 respond within " +
      ev.respond_within_minutes + " min", "ne-muted"));
  }
  // the team's status from 'update-dashboard' (the _dashboard_status.html partial, rebuilt)
  function fillTeamStatus(box, team) {
    if (!team) { return; }
    var status = String(team.status || "");
    var label = status.replace(/_/g, " ");
    var section = node("section", null, "notify-emergency-team-status notify-emergency-team-status-" + status);
    section.dataset.status = status;
    section.setAttribute("role", "status");
    section.appendChild(node("strong", label.charAt(0).toUpperCase() + label.slice(1).toLowerCase()));
    section.appendChild(document.createTextNode(" "));
    section.appendChild(node("span", team.message || "", "message"));
    section.appendChild(document.createTextNode(" "));
    var small = node("small", (team.updated_by || "") + ", ");
    var time = node("time", team.updated_at || "");
    time.setAttribute("datetime", team.updated_at || "");
    small.appendChild(time);
    section.appendChild(small);
    box.appendChild(section);
  }
  function audit(rows) {
    var table = document.getElementById("ne-recent-audit");
    if (!table) { return; }
    var body = table.tBodies[0];
    body.textContent = "";
    if (!rows.length) { var empty = body.insertRow(); var td = empty.insertCell(); td.colSpan = 5; td.textContent = "Nothing yet."; }
    rows.forEach(function (a) {
      var tr = body.insertRow();
      [when(a.at), a.actor, a.action, a.outcome, a.detail || ""].forEach(function (v) { tr.insertCell().textContent = v; });
    });
  }

  // -- the chart: stacked bars per time bucket, plain SVG --------------------------------
  var CHANNELS = ["realtime", "flash", "poll", "undelivered"];
  function chart(series) {
    var box = document.getElementById("ne-chart");
    if (!box || !series) { return; }
    lastSeries = series;
    var n = series.starts.length;
    var totals = series.starts.map(function (_, i) {
      return CHANNELS.reduce(function (s, c) { return s + (series.channels[c][i] || 0); }, 0);
    });
    var max = Math.max(1, Math.max.apply(null, totals));
    // drawn at the box's own size, so text and bars keep their proportions on any screen
    var W = Math.max(200, box.clientWidth || 600), H = Math.max(100, box.clientHeight || 180);
    var left = 40, bottom = 20, top = 8;
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("class", "ne-chart-svg");
    var plotH = H - bottom - top, slot = (W - left) / n, barW = Math.max(1, slot * 0.8);
    [0, max].forEach(function (v) {
      var y = top + plotH - (v / max) * plotH;
      var line = document.createElementNS(SVG, "line");
      line.setAttribute("x1", left); line.setAttribute("x2", W); line.setAttribute("y1", y); line.setAttribute("y2", y);
      line.setAttribute("class", "ne-grid");
      svg.appendChild(line);
      var label = document.createElementNS(SVG, "text");
      label.setAttribute("x", left - 4); label.setAttribute("y", y + 4); label.setAttribute("text-anchor", "end");
      label.setAttribute("class", "ne-axis");
      label.textContent = String(v);
      svg.appendChild(label);
    });
    for (var i = 0; i < n; i++) {
      var y = top + plotH;
      var g = document.createElementNS(SVG, "g");
      var title = document.createElementNS(SVG, "title");
      title.textContent = when(series.starts[i]) + ": " + CHANNELS.map(function (c) {
        return c + " " + (series.channels[c][i] || 0); }).join(", ");
      g.appendChild(title);
      CHANNELS.forEach(function (c) {
        var v = series.channels[c][i] || 0;
        if (!v) { return; }
        var h = (v / max) * plotH;
        y -= h;
        var r = document.createElementNS(SVG, "rect");
        r.setAttribute("x", left + i * slot + (slot - barW) / 2); r.setAttribute("y", y);
        r.setAttribute("width", barW); r.setAttribute("height", Math.max(h, 0.5));
        r.setAttribute("class", "ne-bar ne-ch-" + c);
        g.appendChild(r);
      });
      svg.appendChild(g);
    }
    [[0, "start"], [n - 1, "end"]].forEach(function (p) {
      var t = document.createElementNS(SVG, "text");
      t.setAttribute("x", p[1] === "start" ? left : W); t.setAttribute("y", H - 4);
      t.setAttribute("text-anchor", p[1]); t.setAttribute("class", "ne-axis");
      t.textContent = when(series.starts[p[0]]).slice(5, 16);
      svg.appendChild(t);
    });
    box.textContent = "";
    box.appendChild(svg);
  }

  // -- the rollback page: its checklist, re-read every period ----------------------------
  function fillRollbackStatus(box, status) {
    box.appendChild(node("h2", "Checklist and status"));
    if (!status.available) { box.appendChild(node("p", "Not available: " + (status.detail || ""), "ne-unavailable")); return; }
    if (status.error) { box.appendChild(node("p", "Could not read the rollback status: " + status.error, "ne-flash ne-flash-error")); return; }
    var list = status.checklist || status.checks || [];
    if (!Array.isArray(list)) { list = Object.keys(list).map(function (k) { var v = list[k]; return typeof v === "object" && v ? Object.assign({ name: k }, v) : { name: k, ok: !!v }; }); }
    if (list.length) {
      box.appendChild(node("p", null)).appendChild(node("strong", "Pre-rollback checklist: " + (status.ready ? "ready" : "not ready")));
      var ul = node("ul", null, "ne-checklist");
      ul.id = "ne-checklist";
      list.forEach(function (item) {
        var li = node("li", null, "ne-check-" + (item.ok ? "ok" : "fail"));
        li.appendChild(node("span", item.ok ? "\u2714" : "\u2718")).setAttribute("aria-hidden", "true");
        li.appendChild(document.createTextNode(" "));
        li.appendChild(node("strong", item.name));
        if (item.detail) { li.appendChild(document.createTextNode(": " + item.detail)); }
        ul.appendChild(li);
      });
      box.appendChild(ul);
    }
    var dl = node("dl", null, "ne-facts");
    Object.keys(status).forEach(function (k) {
      if (k === "checklist" || k === "checks" || k === "available" || k === "ready") { return; }
      var v = status[k];
      dl.appendChild(node("dt", k.replace(/_/g, " ")));
      dl.appendChild(node("dd", v === null ? "\u2013" : v === true ? "yes" : v === false ? "no" :
        typeof v === "object" ? JSON.stringify(v) : v));
    });
    box.appendChild(dl);
  }

  // -- polling ---------------------------------------------------------------------------
  function fetchJson(url) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; });
  }
  function pollOnce() {
    var jobs = [fetchJson(settings.overviewUrl + "?window=" + encodeURIComponent(settings.window)).then(apply)];
    if (settings.page === "rollback_page") { jobs.push(fetchJson(settings.rollbackStatusUrl).then(rollbackStatus)); }
    return Promise.all(jobs).catch(function () { /* server unreachable: the next round tries again */ });
  }
  function schedulePoll() {
    if (pollTimer) { clearTimeout(pollTimer); }
    pollTimer = setTimeout(function () {
      pollTimer = null;
      if (state !== "live") { pollOnce().then(schedulePoll); } else if (settings.page === "rollback_page") {
        fetchJson(settings.rollbackStatusUrl).then(rollbackStatus).catch(function () {}).then(schedulePoll);
      }
    }, refreshMs);
  }
  function goPolling() {
    if (state === "polling") { return; }
    setState("polling");
    pollOnce().then(schedulePoll);
  }
  function gotPush(data) {
    lastPush = Date.now();
    if (state !== "live") { setState("live"); }
    apply(data);
  }

  // -- the socket ------------------------------------------------------------------------
  function connect() {
    if (!settings.socket || typeof window.io !== "function") { goPolling(); return; }
    socket = window.io(settings.namespace, { transports: ["websocket", "polling"], reconnectionDelayMax: 10000 });
    socket.on("connect", function () {
      // the answer is fresh data but no proof of live: only pushes (which go through the
      // message queue when there is one) make the page live
      socket.emit(SUBSCRIBE_EVENT, { window: settings.window }, function (reply) {
        if (reply && reply.ok) { apply(reply.overview); }
      });
    });
    socket.on(OVERVIEW_EVENT, function (msg) {
      if (msg && msg.window === settings.window) { gotPush(msg.overview); }
    });
    socket.on("disconnect", goPolling);
    socket.on("connect_error", goPolling);
    setInterval(function () {
      if (state === "live" && Date.now() - lastPush > staleMs) { goPolling(); }
    }, 1000);
    setTimeout(function () { if (state === "connecting") { goPolling(); } }, staleMs);
  }

  // -- typed confirmations ---------------------------------------------------------------
  // The button says it is not ready (aria-disabled) but stays focusable; submitting anyway, or
  // with a required field empty, names what is missing in an alert, marks the field invalid and
  // puts the focus on it, instead of a silent refusal or the browser's own bubble.
  document.querySelectorAll("[data-confirm-word]").forEach(function (input) {
    var form = input.form;
    var button = form && form.querySelector("[data-needs-confirm]");
    if (!button) { return; }
    form.noValidate = true;
    var errors = document.createElement("div");
    errors.className = "ne-form-errors";
    errors.id = form.id + "-errors";
    errors.setAttribute("role", "alert");
    form.insertBefore(errors, button);
    var check = function () {
      button.setAttribute("aria-disabled", input.value.trim() !== input.dataset.confirmWord ? "true" : "false");
    };
    var problems = function () {
      var found = [];
      form.querySelectorAll("[required]").forEach(function (field) {
        var label = field.closest("label");
        var name = label ? (label.dataset.name || label.firstChild.textContent.trim()) : field.name;
        if (field === input && field.value.trim() !== input.dataset.confirmWord) {
          found.push([field, "Type " + input.dataset.confirmWord + " (in capitals) in the confirmation field."]);
        } else if (!field.value.trim()) {
          found.push([field, name + " is required."]);
        }
      });
      return found;
    };
    var mark = function (found) {
      form.querySelectorAll("[aria-invalid]").forEach(function (f) { f.removeAttribute("aria-invalid"); f.removeAttribute("aria-describedby"); });
      errors.textContent = "";
      found.forEach(function (p) {
        p[0].setAttribute("aria-invalid", "true");
        p[0].setAttribute("aria-describedby", errors.id);
        errors.appendChild(node("p", p[1], "ne-field-error"));
      });
    };
    form.addEventListener("submit", function (event) {
      var found = problems();
      mark(found);
      if (found.length) { event.preventDefault(); found[0][0].focus(); }
    });
    input.addEventListener("input", function () {
      check();
      if (input.getAttribute("aria-invalid") && input.value.trim() === input.dataset.confirmWord) { mark(problems()); }
    });
    check();
  });

  var lastSeries = null;
  window.addEventListener("resize", function () { if (lastSeries) { chart(lastSeries); } });
  var initial = document.getElementById("ne-overview-data");
  if (initial) { try { apply(JSON.parse(initial.textContent)); } catch (e) { /* keep the server's render */ } }
  window.neDashboard = { settings: settings, state: function () { return state; }, refresh: pollOnce };
  setState("connecting");
  connect();
  if (settings.page === "rollback_page") { schedulePoll(); }
})();
