// warmupd dashboard: the secret (this tab's sessionStorage only), the buttons, live refresh.
// Every text from the API is set with textContent, never parsed as HTML.
"use strict";
(function () {
  var KEY = "warmupd.secret";
  var body = document.body;
  var readAuth = body.getAttribute("data-read-auth") === "true";
  var page = body.getAttribute("data-page");
  var flash = document.getElementById("flash");
  var GLYPH = { success: "✓", failed: "✕", running: "●", skipped: "–", cancelled: "○", abandoned: "○" };

  function secret() { try { return sessionStorage.getItem(KEY) || ""; } catch (e) { return ""; } }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function say(text, bad, href, linkText) {
    flash.textContent = "";
    var p = el("p", bad ? "bad" : "", text);
    if (href) { p.appendChild(document.createTextNode(" ")); var a = el("a", "", linkText); a.href = href; p.appendChild(a); }
    flash.appendChild(p);
  }
  function badge(status) {
    var span = el("span", "badge st-" + status);
    span.appendChild(el("span", "glyph", GLYPH[status] || "?")).setAttribute("aria-hidden", "true");
    span.appendChild(document.createTextNode(" " + status));
    return span;
  }
  function relative(iso) {
    var s = Math.round((Date.parse(iso) - Date.now()) / 1000), a = Math.abs(s), text;
    if (a < 60) text = a + " s";
    else if (a < 3600) text = Math.floor(a / 60) + " min " + (a % 60) + " s";
    else if (a < 172800) text = Math.floor(a / 3600) + " h " + Math.floor(a % 3600 / 60) + " min";
    else text = Math.floor(a / 86400) + " d " + Math.floor(a % 86400 / 3600) + " h";
    return s === 0 ? "now" : s > 0 ? "in " + text : text + " ago";
  }
  function headers(extra) {
    var h = extra || {};
    if (secret()) h["X-Job-Secret"] = secret();
    return h;
  }
  function canRead() { return !readAuth || !!secret(); }
  function getJSON(url) {
    return fetch(url, { headers: headers({ Accept: "application/json" }), credentials: "omit" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    });
  }

  // ---- the secret field
  var form = document.getElementById("secret-form");
  if (form) {
    form.hidden = false;
    var input = document.getElementById("secret-input");
    var state = document.getElementById("secret-state");
    var show = function () {
      state.textContent = secret() ? "secret set for this tab"
        : readAuth ? "no secret set: the buttons and live refresh need it" : "no secret set";
    };
    show();
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (input.value) sessionStorage.setItem(KEY, input.value);
      input.value = "";
      show();
    });
    document.getElementById("secret-forget").addEventListener("click", function () {
      sessionStorage.removeItem(KEY); show();
    });
  }

  // ---- the buttons
  var ACTIONS = {
    run: function (b) { return ["/api/jobs/" + encodeURIComponent(b.dataset.job), "Run of " + b.dataset.job]; },
    pause: function (b) { return ["/api/jobs/" + encodeURIComponent(b.dataset.job) + "/pause", b.dataset.job + " paused"]; },
    resume: function (b) { return ["/api/jobs/" + encodeURIComponent(b.dataset.job) + "/resume", b.dataset.job + " resumed"]; },
    warmup: function (b) { return ["/api/comparison/warmup", "Warmup of " + b.dataset.slug]; }
  };
  function explain(status, body) {
    var msg = (body && body.message) || ("HTTP " + status);
    if (status === 401) return "Refused: the secret is wrong or missing (" + msg + "). Type the job secret above and press Use.";
    if (status === 503) return "Refused: " + msg;
    if (status === 429) return "Not started: " + msg;
    return "Failed: " + msg;
  }
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest ? ev.target.closest("button[data-action]") : null;
    if (!b) return;
    var kind = b.dataset.action;
    var row = b.closest("[data-job]");
    if (row) b.dataset.job = row.getAttribute("data-job");
    if (!secret()) { say("Type the job secret in the field at the top first: " + kind + " needs it.", true); return; }
    var spec = ACTIONS[kind](b);
    var init = { method: "POST", headers: headers(), credentials: "omit" };
    if (kind === "warmup") {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify({ slug: b.dataset.slug });
    }
    b.disabled = true;
    fetch(spec[0], init).then(function (r) {
      return r.json().then(function (data) { return [r.status, data]; }, function () { return [r.status, null]; });
    }).then(function (res) {
      var status = res[0], data = res[1];
      if (status >= 400) { say(explain(status, data), true); return; }
      if (kind === "run") say(spec[1] + " started: run #" + data.runId + ".", false, "/ui/runs/" + data.runId, "Open run #" + data.runId);
      else if (kind === "warmup") say(spec[1] + ": " + data.status + ".");
      else say(spec[1] + ".");
      refresh();
    }, function () { say("The daemon did not answer.", true); }).then(function () {
      b.disabled = false;
      if (kind === "pause" || kind === "resume") refresh();
    });
  });

  // ---- live refresh
  function jobRow(job) {
    var row = document.querySelector('[data-job="' + CSS.escape(job.name) + '"]');
    if (!row) return;
    row.setAttribute("data-paused", job.paused ? "true" : "false");
    var pause = row.querySelector('[data-action="pause"]'), resume = row.querySelector('[data-action="resume"]');
    if (pause) pause.disabled = !!job.paused;
    if (resume) resume.disabled = !job.paused;
    var flags = row.querySelector('[data-field="flags"]');
    if (flags) {
      flags.textContent = "";
      var flag = function (cls, glyph, text) {
        var f = badge(cls); f.firstChild.textContent = glyph; f.lastChild.textContent = " " + text;
        flags.appendChild(f); flags.appendChild(document.createTextNode(" "));
      };
      if (job.paused) flag("skipped", "⏸", "paused");
      if (job.overdue) flag("failed", "!", "overdue");
      if (!job.enabled) flag("cancelled", "○", "disabled");
    }
    var next = row.querySelector('[data-field="next"]');
    if (next) {
      next.textContent = job.nextRunAt
        ? job.nextRunAt.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC") + " (" + relative(job.nextRunAt) + ")" +
          (job.paused ? " — will be skipped while paused" : "")
        : "none scheduled";
    }
    var running = row.querySelector('[data-field="running"]');
    running.textContent = "";
    if (job.running) {
      var a = el("a", "", "run #" + job.running); a.href = "/ui/runs/" + job.running;
      running.appendChild(a); running.appendChild(document.createTextNode(" ")); running.appendChild(badge("running"));
    } else running.textContent = "no";
    var last = row.querySelector('[data-field="last"]'), r = job.lastRun;
    if (r) {
      last.textContent = "";
      var link = el("a", "", "#" + r.id); link.href = "/ui/runs/" + r.id;
      last.appendChild(link); last.appendChild(document.createTextNode(" ")); last.appendChild(badge(r.status));
      last.appendChild(document.createTextNode((r.reason ? " " + r.reason : "") + ", " + r.durationMs + " ms, " +
        r.processed + " processed / " + r.skipped + " skipped / " + r.failed + " failed"));
    }
  }
  function runsRow(r) {
    var tr = el("tr"); tr.setAttribute("data-run-id", r.id);
    var a = el("a", "", "#" + r.id); a.href = "/ui/runs/" + r.id;
    var cells = [a, r.job, badge(r.status), r.trigger, r.startedAt, r.durationMs === null ? "—" : r.durationMs + " ms",
      r.processed + " / " + r.skipped + " / " + r.failed];
    var labels = ["Run", "Job", "Status", "Trigger", "Started", "Duration", "Processed / skipped / failed"];
    cells.forEach(function (c, i) {
      var td = el("td"); td.setAttribute("data-label", labels[i]);
      if (typeof c === "object") td.appendChild(c); else td.textContent = c;
      tr.appendChild(td);
    });
    if (r.reason) tr.children[2].appendChild(el("span", "muted", " " + r.reason));
    return tr;
  }
  function refreshOverview() {
    return Promise.all([getJSON("/api/status"), getJSON("/api/jobs/runs?limit=10")]).then(function (res) {
      var st = res[0];
      st.jobs.forEach(jobRow);
      var set = function (field, value) {
        var node = document.querySelector('[data-field="' + field + '"]');
        if (node) node.textContent = value;
      };
      set("inflight", st.onDemand.inFlight);
      set("queued", st.onDemand.queued);
      ["fresh", "stale", "expired"].forEach(function (k) { set("cache-" + k, st.cache[k]); });
      var tbody = document.querySelector("#latest-runs tbody");
      if (tbody && res[1].runs.length) { tbody.textContent = ""; res[1].runs.forEach(function (r) { tbody.appendChild(runsRow(r)); }); }
    });
  }
  function refreshRun() {
    var panel = document.querySelector("[data-run]");
    if (!panel || panel.getAttribute("data-status") !== "running") return Promise.resolve();
    return getJSON("/api/jobs/runs/" + panel.getAttribute("data-run")).then(function (r) {
      if (r.status !== "running") { location.reload(); return; }
      var done = r.processed + r.skipped + r.failed, sel = r.metadata.selected;
      ["processed", "skipped", "failed"].forEach(function (k) { panel.querySelector('[data-field="' + k + '"]').textContent = r[k]; });
      var bar = panel.querySelector('[data-field="progress"]');
      if (bar) { bar.max = sel || 1; bar.value = done; }
      var text = panel.querySelector('[data-field="progress-text"]');
      if (text) text.textContent = done + " of " + (sel === null || sel === undefined ? "?" : sel) + " selected (" +
        r.processed + " processed, " + r.skipped + " skipped, " + r.failed + " failed)";
    });
  }
  function refreshComparison() {
    var panel = document.querySelector("[data-slug]");
    if (!panel) return Promise.resolve();
    return getJSON("/api/comparison/" + encodeURIComponent(panel.getAttribute("data-slug")) + "/status").then(function (s) {
      var w = panel.querySelector('[data-field="warmup"]');
      if (w) w.textContent = s.warmup + (s.lastError ? ": " + s.lastError : "");
      var changed = ["forecastA", "forecastB", "insights"].some(function (p) {
        var cell = panel.querySelector('[data-part="' + p + '"]');
        return cell && s.parts[p] && cell.textContent.indexOf(s.parts[p]) < 0;
      });
      if (changed && (s.warmup === "ready" || s.warmup === "idle")) location.reload();
    });
  }
  var REFRESH = { overview: refreshOverview, run: refreshRun, comparison: refreshComparison };
  var busy = false;
  function refresh() {
    if (busy || !REFRESH[page] || !canRead() || document.hidden) return;
    busy = true;
    REFRESH[page]().catch(function () { /* the next tick tries again */ }).then(function () { busy = false; });
  }
  // Narrow screens scroll the week's timeline inside its box: start at today, the right end.
  var tl = document.querySelector('.chart-scroll svg[data-chart="timeline"]');
  if (tl) tl.parentNode.scrollLeft = tl.parentNode.scrollWidth;
  if (REFRESH[page]) setInterval(refresh, page === "comparison" ? 3000 : 1500);
})();
