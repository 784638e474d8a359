/* flask-notify-emergency client: Socket.IO when it works, polling when it does not.
 * Shows each notification once (ids remembered per tab), acknowledges what it shows,
 * keeps the site-wide banners current. No framework, no CDN. */
(function () {
  "use strict";
  var el = document.getElementById("notify-emergency-settings");
  if (!el) { return; }
  var settings = JSON.parse(el.textContent);
  var SEEN_KEY = "notify-emergency-seen";
  var seen = loadSeen();
  var socket = null;
  var live = false;
  var mode = settings.mode || "normal";
  var pollTimer = null;

  function loadSeen() {
    try { return new Set(JSON.parse(sessionStorage.getItem(SEEN_KEY) || "[]")); }
    catch (e) { return new Set(); }
  }
  function remember(id) {
    seen.add(id);
    try { sessionStorage.setItem(SEEN_KEY, JSON.stringify(Array.from(seen).slice(-500))); } catch (e) { /* full */ }
  }

  function container() {
    var box = document.getElementById("notify-emergency-toasts");
    if (!box) {
      box = document.createElement("div");
      box.id = "notify-emergency-toasts";
      box.className = "notify-emergency-toasts";
      box.setAttribute("aria-live", "polite");
      document.body.appendChild(box);
    }
    return box;
  }

  function show(n, via) {
    if (seen.has(n.id)) { return false; }
    remember(n.id);
    var item = document.createElement("div");
    item.className = "notify-emergency-toast notify-emergency-priority-" + String(n.priority || "normal");
    item.setAttribute("role", n.priority === "critical" ? "alert" : "status");
    item.dataset.notificationId = String(n.id);
    item.dataset.via = via;
    var title = document.createElement("strong");
    title.textContent = n.title;
    var body = document.createElement("span");
    body.textContent = " " + n.message;
    item.appendChild(title);
    item.appendChild(body);
    if (n.action_url && /^(\/(?!\/)|https?:\/\/)/.test(n.action_url)) {
      var a = document.createElement("a");
      a.href = n.action_url;
      a.textContent = " Open";
      item.appendChild(a);
    }
    var close = document.createElement("button");
    close.type = "button";
    close.className = "notify-emergency-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "\u00d7";
    close.addEventListener("click", function () { item.remove(); });
    item.appendChild(close);
    container().appendChild(item);
    document.dispatchEvent(new CustomEvent("notify-emergency:notification", { detail: { notification: n, via: via } }));
    return true;
  }

  function renderBanners(banners, newMode) {
    var box = document.getElementById("notify-emergency-banners");
    if (!box) { return; }
    mode = newMode || mode;
    box.textContent = "";
    if (mode === "emergency" || mode === "legacy") {
      var m = document.createElement("div");
      m.className = "notify-emergency-banner notify-emergency-level-critical notify-emergency-mode";
      m.setAttribute("role", "alert");
      m.dataset.mode = mode;
      var s = document.createElement("strong");
      s.textContent = "Live notifications are paused.";
      var t = document.createElement("span");
      t.textContent = " You will still get every notification: they appear here when you load a page" +
        (mode === "emergency" ? ", and within seconds while this page is open." : ".");
      m.appendChild(s); m.appendChild(t);
      box.appendChild(m);
    }
    (banners || []).forEach(function (b) {
      var d = document.createElement("div");
      d.className = "notify-emergency-banner notify-emergency-level-" + String(b.level);
      d.setAttribute("role", (b.level === "danger" || b.level === "critical") ? "alert" : "status");
      d.dataset.bannerId = String(b.id);
      if (b.title) { var bt = document.createElement("strong"); bt.textContent = b.title + " "; d.appendChild(bt); }
      var bm = document.createElement("span"); bm.textContent = b.message; d.appendChild(bm);
      box.appendChild(d);
    });
    document.documentElement.dataset.notifyEmergencyMode = mode;
  }

  function refreshBanners() {
    fetch(settings.bannersUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { renderBanners(data.banners, data.mode); schedulePoll(); } })
      .catch(function () { /* next poll will try again */ });
  }

  function poll() {
    if (!settings.loggedIn) { return; }
    fetch(settings.pollUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Accept": "application/json", "Content-Type": "application/json", "X-CSRF-Token": settings.csrfToken || "" },
      body: "{}"
    }).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        (data.notifications || []).forEach(function (n) { show(n, "poll"); });
        renderBanners(data.banners, data.mode);
        if (data.notifications && data.notifications.length >= 1) { pollSoon(); }
      })
      .catch(function () { /* server unreachable: keep polling */ })
      .then(schedulePoll);
  }

  function interval() {
    var base = (settings.pollInterval || 5) * 1000;
    return (live && mode === "normal") ? base * 6 : base;
  }
  function schedulePoll() {
    if (pollTimer) { clearTimeout(pollTimer); }
    pollTimer = setTimeout(poll, interval());
  }
  function pollSoon() {
    if (pollTimer) { clearTimeout(pollTimer); }
    pollTimer = setTimeout(poll, 200);
  }

  function setLive(value) {
    live = value;
    document.documentElement.dataset.notifyEmergencyChannel = value ? "live" : "polling";
    if (!value) { pollSoon(); } else { schedulePoll(); }
  }

  function connect() {
    if (!settings.socket || !settings.loggedIn || typeof window.io !== "function") { setLive(false); return; }
    socket = window.io(settings.namespace, { transports: ["websocket", "polling"], reconnectionDelayMax: 10000 });
    socket.on("connect", function () { setLive(true); });
    socket.on("disconnect", function (reason) {
      setLive(false);
      // the server closed it (e.g. a recovery action): socket.io will not retry by itself
      if (reason === "io server disconnect") { setTimeout(function () { socket.connect(); }, 1000); }
    });
    socket.on("connect_error", function () { setLive(false); });
    socket.on("notify_emergency:notification", function (n) {
      // the server's probe of the live path: acknowledged, never shown
      if (!(n.data && n.data.probe)) { show(n, "socket"); }
      socket.emit("notify_emergency:ack", { id: n.id });
    });
    socket.on("notify_emergency:banner", function () { refreshBanners(); });
    socket.on("notify_emergency:mode", function () { refreshBanners(); });
    socket.on("notify_emergency:pending", function () { pollSoon(); });
  }

  window.notifyEmergency = { settings: settings, poll: poll, isLive: function () { return live; } };
  connect();
  if (!live) { poll(); }
})();
