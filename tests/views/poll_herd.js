/* A crowd of pages switching to polling at once, scheduled by the shipped client script.
 *
 * Loads static/client.js as the browser does (its page part finds no settings element and
 * stops; the poll schedule, window.notifyEmergencySchedule, is what the page's poll loop
 * calls) and plays PAGES pages on a virtual clock: at t=0 every page hears the mode change
 * and spreads its first poll (spreadDelay); each poll is a real POST to the served app, whose
 * reply (poll_interval, poll_phase) sets that page's next poll (nextDelay), exactly as the
 * page's poll() -> followServer() -> schedulePoll() does. Prints the virtual time of every
 * poll the server answered, as JSON.
 *
 * Usage: node poll_herd.js CLIENT_JS BASE_URL COOKIE CSRF PAGES UNTIL_SECONDS SEED [herd]
 * "herd" replaces the schedule with a fixed interval and no spread (what a client without
 * jitter does), so the test can show that its measure sees a herd.
 */
"use strict";
const fs = require("fs");
const vm = require("vm");

const [clientJs, base, cookie, csrf, pagesArg, untilArg, seedArg, variant] = process.argv.slice(2);
const PAGES = Number(pagesArg);
const UNTIL = Number(untilArg) * 1000;

const sandbox = { document: { getElementById: function () { return null; } } };
vm.runInNewContext(fs.readFileSync(clientJs, "utf8"), sandbox, { filename: clientJs });
const shipped = sandbox.notifyEmergencySchedule;
if (!shipped) { throw new Error("client.js defines no notifyEmergencySchedule"); }
const schedule = variant === "herd" ? {
  spreadDelay: function (interval) { return interval * 1000; },
  nextDelay: function (interval) { return interval * 1000; }
} : shipped;

// a seeded generator stands in for each page's Math.random: the same run every time
let state = Number(seedArg) >>> 0;
function random() {
  state = (state + 0x6D2B79F5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

const http = require("http");
const agent = new http.Agent({ keepAlive: false, maxSockets: 1 });

function ask(path, init) {
  init = init || {};
  return new Promise(function (resolve, reject) {
    const headers = Object.assign({ "Accept": "application/json", "Cookie": cookie }, init.headers || {});
    const req = http.request(base + path, { method: init.method || "GET", headers: headers, agent: agent }, function (res) {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", function (chunk) { body += chunk; });
      res.on("end", function () {
        if (res.statusCode !== 200) { reject(new Error(path + " answered " + res.statusCode)); return; }
        try { resolve(JSON.parse(body)); } catch (e) { reject(e); }
      });
    });
    req.on("error", reject);
    if (init.body) { req.write(init.body); }
    req.end();
  });
}

// a binary heap of [time, page]
const heap = [];
function push(item) {
  heap.push(item);
  let i = heap.length - 1;
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (heap[p][0] <= heap[i][0]) { break; }
    [heap[p], heap[i]] = [heap[i], heap[p]];
    i = p;
  }
}
function pop() {
  const top = heap[0];
  const last = heap.pop();
  if (heap.length) {
    heap[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < heap.length && heap[l][0] < heap[m][0]) { m = l; }
      if (r < heap.length && heap[r][0] < heap[m][0]) { m = r; }
      if (m === i) { break; }
      [heap[m], heap[i]] = [heap[i], heap[m]];
      i = m;
    }
  }
  return top;
}

(async function () {
  // the mode push tells each page the new mode's interval; the banners reply (the page's next
  // request) gives the same value from the same server function, and it is what is asked here
  const banners = await ask("/emergency/api/banners");
  const intervals = [banners.poll_interval];
  for (let page = 0; page < PAGES; page++) {
    push([schedule.spreadDelay(banners.poll_interval, random()), page]);
  }
  const polls = [];
  while (heap.length && heap[0][0] < UNTIL) {
    const [at, page] = pop();
    const reply = await ask("/emergency/api/notifications/poll", {
      method: "POST", body: "{}", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }
    });
    polls.push(at / 1000);
    if (intervals[intervals.length - 1] !== reply.poll_interval) { intervals.push(reply.poll_interval); }
    // the page's poll loop: in emergency mode a page polls as if its socket were down
    push([at + schedule.nextDelay(reply.poll_interval, false, reply.poll_phase, random()), page]);
  }
  process.stdout.write(JSON.stringify({ polls: polls, intervals: intervals, mode: banners.mode }));
})().catch(function (err) { process.stderr.write(String(err && err.stack || err) + "\n"); process.exit(1); });
