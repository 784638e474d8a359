/* flask-notify-emergency client: Socket.IO when it works, polling when it does not.
 * Shows each notification once in a tab, whatever brings it (socket, poll, a flash in the
 * page), acknowledges what came over the socket, keeps the site-wide banners current.
 * No framework, no CDN. */
(function () {
  "use strict";
  var el = document.getElementById("notify-emergency-settings");
  if (!el) { return; }
  var settings = JSON.parse(el.textContent);
  var socket = null;
  var live = false;
  var mode = settings.mode || "normal";
  var pollTimer = null;

  function notificationId(value) {
    var id = typeof value === "string" && /^[0-9]{1,15}$/.test(value) ? Number(value) : value;
    return (typeof id === "number" && id > 0 && Math.floor(id) === id && id <= Number.MAX_SAFE_INTEGER) ? id : null;
  }

  /* -- dedupe store: the ids this tab has shown, by any channel ---------------------------
   * In sessionStorage, so a page load in the same tab still knows them; the latest SEEN_MAX
   * are kept. A later copy of a shown id (a stale emit, a redelivery after a lost ack, a
   * flash of something a poll showed) is dropped. */
  var SEEN_KEY = "notify-emergency-seen";
  var SEEN_MAX = 500;
  var seen = loadSeen();

  function loadSeen() {
    try {
      var stored = JSON.parse(sessionStorage.getItem(SEEN_KEY) || "[]");
      return new Set(Array.isArray(stored) ? stored.map(notificationId).filter(Boolean) : []);
    } catch (e) { return new Set(); }
  }
  function alreadyShown(id) { return seen.has(id); }
  function rememberShown(id) {
    seen = loadSeen();  // another document of this tab (a frame) may have added some
    seen.delete(id);
    seen.add(id);       // insertion order: the latest last
    var ids = Array.from(seen);
    if (ids.length > SEEN_MAX) { ids = ids.slice(-SEEN_MAX); seen = new Set(ids); }
    try { sessionStorage.setItem(SEEN_KEY, JSON.stringify(ids)); } catch (e) { /* storage off or full: this page still knows */ }
  }

  /* -- ack outbox: shown, the server's confirmation not yet received ----------------------
   * A cookie (settings.ackCookie: ids joined by "."), so the next request to the app carries
   * it, a page load or a poll; the server acknowledges those ids before it flashes or claims
   * anything. What came over the socket or a poll goes in once shown (or dropped as a copy
   * already shown); a page's flashes are put in by the page response itself. A poll or a flash
   * is only an offer: unconfirmed, the server offers it again after a while. An id leaves the
   * outbox when a socket ack reply, an ack reply or a poll reply confirms it. */
  var OUTBOX_MAX = 20;
  var ACK_WAIT_MS = 5000;

  function outboxIds() {
    var name = settings.ackCookie;
    if (!name) { return []; }
    var found = document.cookie.split("; ").filter(function (c) { return c.indexOf(name + "=") === 0; })[0];
    if (!found) { return []; }
    return found.slice(name.length + 1).split(".").map(notificationId).filter(Boolean);
  }
  function writeOutbox(ids) {
    var name = settings.ackCookie;
    if (!name) { return; }
    var attrs = "; path=/; SameSite=Lax" + (window.location.protocol === "https:" ? "; Secure" : "");
    document.cookie = ids.length ? name + "=" + ids.slice(-OUTBOX_MAX).join(".") + attrs
                                 : name + "=" + attrs + "; max-age=0";
  }
  function outboxAdd(id) {
    var ids = outboxIds();
    if (ids.indexOf(id) < 0) { ids.push(id); writeOutbox(ids); }
  }
  function outboxConfirmed(done) {
    if (!done.length) { return; }
    var ids = outboxIds();
    var left = ids.filter(function (id) { return done.indexOf(id) < 0; });
    if (left.length !== ids.length) { writeOutbox(left); }
  }
  function sendAcks(viaHttp) {
    var ids = outboxIds();
    if (!ids.length) { return; }
    if (socket && socket.connected) {
      socket.timeout(ACK_WAIT_MS).emit("notify_emergency:ack", { ids: ids }, function (err, reply) {
        // no reply in time: the ids stay for the next request, which carries the cookie
        if (!err && reply && reply.ok) { outboxConfirmed(ids); }
      });
    } else if (viaHttp && settings.ackUrl && settings.loggedIn) {
      fetch(settings.ackUrl, {
        method: "POST", credentials: "same-origin",
        headers: { "Accept": "application/json", "Content-Type": "application/json", "X-CSRF-Token": settings.csrfToken || "" },
        body: JSON.stringify({ ids: ids })
      }).then(function (r) { if (r.ok) { outboxConfirmed(ids); } })
        .catch(function () { /* the ids stay for the next request */ });
    }
  }

  /* -- flashes in the page: the extension ends a flashed notification's text with its id in
   * invisible characters (U+2063, the bits as U+200B = 0 / U+200C = 1, U+2063). A flash whose
   * id this tab has shown is hidden with its box: the closest [data-notify-emergency-flash]
   * element, else the largest element around it that holds nothing else. */
  var FLASH_MARK = /\u2063([\u200b\u200c]{1,53})\u2063/;

  function pageFlashes() {
    var found = [];
    if (!document.body) { return found; }
    var walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
      acceptNode: function (node) {
        var parent = node.parentElement;
        if (!parent || /^(SCRIPT|STYLE|TEXTAREA|NOSCRIPT)$/.test(parent.tagName)) { return NodeFilter.FILTER_REJECT; }
        return node.nodeValue.indexOf("\u2063") >= 0 ? NodeFilter.FILTER_ACCEPT : NodeFilter.FILTER_SKIP;
      }
    });
    var node;
    while ((node = walker.nextNode())) {
      var match = FLASH_MARK.exec(node.nodeValue);
      if (!match) { continue; }
      var id = parseInt(match[1].replace(/\u200b/g, "0").replace(/\u200c/g, "1"), 2);
      if (notificationId(id)) { found.push({ id: id, node: node }); }
    }
    return found;
  }
  function bareText(element) {
    return (element.textContent || "").replace(/[\s\u2063\u200b\u200c]+/g, "");
  }
  function flashBox(node) {
    var parent = node.parentElement;
    var marked = parent.closest("[data-notify-emergency-flash]");
    if (marked) { return marked; }
    var box = parent;
    var text = bareText(box).length;
    while (box.parentElement && !/^(BODY|HTML|MAIN)$/.test(box.parentElement.tagName) &&
           bareText(box.parentElement).length <= text + 2) {  // 2: room for a dismiss button's "x"
      box = box.parentElement;
    }
    return box;
  }
  function adoptFlashes() {
    pageFlashes().forEach(function (flash) {
      outboxAdd(flash.id);  // the page response put it there; a copy dropped is confirmed too
      if (alreadyShown(flash.id)) {
        var box = flashBox(flash.node);
        box.hidden = true;
        box.style.display = "none";
        box.dataset.notifyEmergencyDuplicate = String(flash.id);
        return;
      }
      rememberShown(flash.id);
      document.dispatchEvent(new CustomEvent("notify-emergency:notification",
        { detail: { notification: { id: flash.id }, via: "flash" } }));
    });
  }

  /* -- action URLs: a path of this site or an http(s) URL, nothing else -------------------
   * "//host", "/\host" and paths with control characters (which browsers drop, turning
   * "/\t/host" into "//host") leave the site; javascript: and data: URLs run code. */
  function safeActionUrl(raw) {
    if (typeof raw !== "string" || !raw || raw.length > 2000 || /[\u0000-\u001f\u007f\\]/.test(raw)) { return null; }
    var url;
    try { url = new URL(raw, window.location.href); } catch (e) { return null; }
    if (raw.charAt(0) === "/") {
      return (raw.charAt(1) !== "/" && url.origin === window.location.origin) ? url.href : null;
    }
    return (/^https?:\/\//i.test(raw) && (url.protocol === "http:" || url.protocol === "https:")) ? url.href : null;
  }

  // -- texts: every word the script shows comes from the page (settings.strings, translated there)
  function text(key, values) {
    var s = (settings.strings && settings.strings[key]) || "";
    Object.keys(values || {}).forEach(function (name) { s = s.split("{" + name + "}").join(values[name]); });
    return s;
  }

  function show(n, via) {
    var id = notificationId(n && n.id);
    if (id === null || alreadyShown(id)) { return false; }
    rememberShown(id);
    renderToast(n, via);
    document.dispatchEvent(new CustomEvent("notify-emergency:notification", { detail: { notification: n, via: via } }));
    return true;
  }

  // -- toasts: announced once (appended to a live region that exists before they arrive),
  // dismissable by keyboard, low/normal ones leave after a reading time (paused while pointed
  // at or focused), high/critical ones stay until dismissed; no motion when reduced motion is asked
  var STAYING = { high: true, critical: true };

  function toastRegions() {
    var box = document.getElementById("notify-emergency-toasts");
    if (!box) {
      box = document.createElement("section");
      box.id = "notify-emergency-toasts";
      box.className = "notify-emergency-toasts";
      box.setAttribute("aria-label", text("notifications"));
      // two live regions: urgent ones are read out at once, the others when the reader is idle;
      // additions only, so a dismissed toast is not read out again
      ["polite", "assertive"].forEach(function (politeness) {
        var region = document.createElement("div");
        region.className = "notify-emergency-toasts-" + politeness;
        region.setAttribute("aria-live", politeness);
        region.setAttribute("aria-relevant", "additions");
        box.appendChild(region);
      });
      document.body.appendChild(box);
    }
    return box;
  }

  function readingTime(n) {
    var length = String(n.title || "").length + String(n.message || "").length;
    // at least the configured time; more for long text (about 15 characters a second)
    return Math.max((settings.toastSeconds || 15) * 1000, length * 1000 / 15);
  }

  function dismissToast(item) {
    if (item.notifyEmergencyTimer) { clearTimeout(item.notifyEmergencyTimer); }
    var focused = item.contains(document.activeElement);
    var next = item.nextElementSibling || item.previousElementSibling;
    item.remove();
    if (focused) {  // keep the keyboard user's place: the next toast's button, else the page
      var button = next && next.querySelector(".notify-emergency-close");
      if (button) { button.focus(); } else { document.body.focus(); }
    }
  }

  function renderToast(n, via) {
    var priority = String(n.priority || "normal");
    var urgent = priority === "critical" || priority === "high";
    var item = document.createElement("div");
    item.className = "notify-emergency-toast notify-emergency-priority-" + priority;
    item.dataset.notificationId = String(n.id);
    item.dataset.via = via;
    item.dataset.priority = priority;
    var title = document.createElement("strong");
    title.textContent = n.title;
    var body = document.createElement("span");
    body.textContent = n.message;
    item.appendChild(title);
    item.appendChild(body);
    var actionUrl = safeActionUrl(n.action_url);
    if (actionUrl) {
      var a = document.createElement("a");
      a.href = actionUrl;
      a.className = "notify-emergency-action";
      a.textContent = text("open");
      item.appendChild(a);
    }
    var close = document.createElement("button");
    close.type = "button";
    close.className = "notify-emergency-close";
    close.setAttribute("aria-label", text("dismissTitled", { title: n.title || "" }) || text("dismiss"));
    close.textContent = "\u00d7";
    close.addEventListener("click", function () { dismissToast(item); });
    item.appendChild(close);
    item.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { event.preventDefault(); dismissToast(item); }
    });
    var box = toastRegions();
    box.querySelector(".notify-emergency-toasts-" + (urgent ? "assertive" : "polite")).appendChild(item);
    if (!STAYING[priority]) {
      var remaining = readingTime(n);
      var started = 0;
      var run = function () { started = Date.now(); item.notifyEmergencyTimer = setTimeout(function () { dismissToast(item); }, remaining); };
      var hold = function () {
        if (item.notifyEmergencyTimer) { clearTimeout(item.notifyEmergencyTimer); item.notifyEmergencyTimer = null; remaining -= Date.now() - started; }
      };
      var resume = function () {
        if (!item.notifyEmergencyTimer && !item.matches(":hover") && !item.contains(document.activeElement)) { remaining = Math.max(remaining, 5000); run(); }
      };
      item.addEventListener("mouseenter", hold);
      item.addEventListener("focusin", hold);
      item.addEventListener("mouseleave", resume);
      item.addEventListener("focusout", function () { setTimeout(resume, 0); });
      run();
    }
  }

  // -- banners: the box is a live region, so only what changed is touched. An unchanged banner
  // (or emergency notice) keeps its element, and a poll that brings the same banners changes
  // nothing in the DOM: nothing is read out again.
  function bannerKey(el) {
    if (el.dataset.mode) { return "mode:" + el.dataset.mode; }
    var strong = el.querySelector("strong");
    var span = el.querySelector("span");
    return [el.dataset.bannerId, el.dataset.level, strong ? strong.textContent.trim() : "",
      span ? span.textContent : ""].join("\u0000");
  }

  function wantedKey(b) {
    return [String(b.id), String(b.level), String(b.title || "").trim(), String(b.message)].join("\u0000");
  }

  function modeNotice(newMode) {
    var m = document.createElement("div");
    m.className = "notify-emergency-banner notify-emergency-level-critical notify-emergency-mode";
    m.setAttribute("role", "alert");
    m.dataset.mode = newMode;
    var s = document.createElement("strong");
    s.textContent = text("modePaused");
    var t = document.createElement("span");
    t.textContent = text(newMode === "emergency" ? "modeEmergency" : "modeLegacy");
    m.appendChild(s); m.appendChild(document.createTextNode(" ")); m.appendChild(t);
    return m;
  }

  function bannerElement(b) {
    var d = document.createElement("div");
    d.className = "notify-emergency-banner notify-emergency-level-" + String(b.level);
    d.setAttribute("role", (b.level === "danger" || b.level === "critical") ? "alert" : "status");
    d.dataset.level = String(b.level);
    d.dataset.bannerId = String(b.id);
    if (b.title) {
      var bt = document.createElement("strong"); bt.textContent = b.title; d.appendChild(bt);
      d.appendChild(document.createTextNode(" "));
    }
    var bm = document.createElement("span"); bm.textContent = b.message; d.appendChild(bm);
    return d;
  }

  function renderBanners(banners, newMode) {
    var box = document.getElementById("notify-emergency-banners");
    mode = newMode || mode;
    if (document.documentElement.dataset.notifyEmergencyMode !== mode) {
      document.documentElement.dataset.notifyEmergencyMode = mode;
    }
    if (!box) { return; }
    var wanted = [];
    if (mode === "emergency" || mode === "legacy") {
      wanted.push({ key: "mode:" + mode, make: function () { return modeNotice(mode); } });
    }
    (banners || []).forEach(function (b) {
      wanted.push({ key: wantedKey(b), make: function () { return bannerElement(b); } });
    });
    var keep = {};
    wanted.forEach(function (w) { keep[w.key] = true; });
    var have = {};
    Array.prototype.slice.call(box.children).forEach(function (el) {
      var key = bannerKey(el);
      if (!keep[key] || have[key]) { el.remove(); } else { have[key] = el; }
    });
    var cursor = box.firstElementChild;
    wanted.forEach(function (w) {
      var el = have[w.key];
      if (el && el === cursor) { cursor = cursor.nextElementSibling; return; }
      box.insertBefore(el || w.make(), cursor);
    });
  }

  function refreshBanners() {
    fetch(settings.bannersUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { renderBanners(data.banners, data.mode); schedulePoll(); } })
      .catch(function () { /* next poll will try again */ });
  }

  function poll() {
    if (!settings.loggedIn) { return; }
    var carried = outboxIds();  // the request's cookie: the server acknowledges these first
    fetch(settings.pollUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Accept": "application/json", "Content-Type": "application/json", "X-CSRF-Token": settings.csrfToken || "" },
      body: "{}"
    }).then(function (r) {
        if (r.ok) { outboxConfirmed(carried); }
        return r.ok ? r.json() : null;
      })
      .then(function (data) {
        if (!data) { return; }
        var offered = (data.notifications || []).map(function (n) {
          show(n, "poll");  // false for a copy this tab has shown: dropped, and confirmed anyway
          return notificationId(n && n.id);
        }).filter(Boolean);
        // shown: confirm it, or the server offers it again after a while
        offered.forEach(outboxAdd);
        if (offered.length) { sendAcks(true); }
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
    socket.on("connect", function () { setLive(true); sendAcks(); });
    socket.on("disconnect", function (reason) {
      setLive(false);
      // the server closed it (e.g. a recovery action): socket.io will not retry by itself
      if (reason === "io server disconnect") { setTimeout(function () { socket.connect(); }, 1000); }
    });
    socket.on("connect_error", function () { setLive(false); });
    socket.on("notify_emergency:notification", function (n) {
      var id = notificationId(n && n.id);
      if (id === null) { return; }
      // the server's probe of the live path (data.probe) is acknowledged, never shown; show() is
      // false for a copy this tab has shown: dropped, and acknowledged anyway
      if (!(n.data && n.data.probe)) { show(n, "socket"); }
      outboxAdd(id);
      sendAcks();
    });
    socket.on("notify_emergency:banner", function () { refreshBanners(); });
    socket.on("notify_emergency:mode", function () { refreshBanners(); });
    socket.on("notify_emergency:pending", function () { pollSoon(); });
  }

  window.notifyEmergency = { settings: settings, poll: poll, isLive: function () { return live; } };
  adoptFlashes();
  if (settings.loggedIn) { toastRegions(); }  // the live regions must exist before a toast arrives
  connect();
  if (!live) { poll(); }
})();
