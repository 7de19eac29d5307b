/* batchexports web page: the few things that happen without a page load.
 *
 * Everything here talks to the JSON API with the signed-in session (CSRF token header):
 * pause switches, destination tests, backfills, retry and cancel, deleting, and polling runs and
 * backfills every 2 s while one of them is Starting or Running. No library, nothing from the network
 * beyond this service.
 */
(function () {
  "use strict";

  var ACTIVE = ["Starting", "Running"];
  var RUNS_SINCE = "1970-01-01T00:00:00Z";
  var STATUS_CLASSES = {
    Completed: "ok", Failed: "bad", FailedBilling: "bad", TimedOut: "bad", Terminated: "bad",
    FailedRetryable: "warn", Running: "active", Starting: "pending", Cancelled: "muted", ContinuedAsNew: "muted"
  };

  // ---- helpers -----------------------------------------------------------------------------

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function api(method, url, body) {
    var options = {
      method: method,
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRFToken": csrfToken() }
    };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(url, options).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        if (text) {
          try { data = JSON.parse(text); } catch (e) { data = { detail: "Unexpected answer (HTTP " + response.status + ")." }; }
        }
        return { ok: response.ok, status: response.status, data: data };
      });
    }, function () {
      return { ok: false, status: 0, data: { detail: "The service could not be reached." } };
    });
  }

  function errorText(result) {
    var data = result.data || {};
    if (typeof data.detail === "string") { return data.detail; }
    if (result.status === 403) { return "You are not allowed to do this (signed out?)."; }
    return "The request failed (HTTP " + result.status + ").";
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      var value = attrs[name];
      if (value === null || value === undefined || value === false) { return; }
      if (name === "text") { node.textContent = value; }
      else if (name === "className") { node.className = value; }
      else { node.setAttribute(name, value === true ? "" : value); }
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) { return; }
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  var toastTimer = null;
  function toast(message, bad) {
    var box = document.getElementById("toast");
    if (!box) { return; }
    box.textContent = message;
    box.classList.toggle("toast-bad", !!bad);
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { box.hidden = true; }, 6000);
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function when(iso) {
    if (!iso) { return "–"; }
    var d = new Date(iso);
    var text = d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    return d.getUTCSeconds() ? text + ":" + pad(d.getUTCSeconds()) : text;
  }

  function intervalText(start, end) {
    if (!start) { return "until " + when(end); }
    var a = when(start), b = when(end);
    return a.slice(0, 10) === b.slice(0, 10) ? a + " – " + b.slice(11) : a + " – " + b;
  }

  function rows(value) { return value === null || value === undefined ? "–" : Number(value).toLocaleString("en-US"); }

  function filesize(value) {
    if (value === null || value === undefined) { return "–"; }
    var size = Number(value), units = ["B", "KB", "MB", "GB", "TB"];
    for (var i = 0; i < units.length; i++) {
      if (size < 1024 || i === units.length - 1) { return i === 0 ? Math.floor(size) + " B" : size.toFixed(1) + " " + units[i]; }
      size /= 1024;
    }
    return value + " B";
  }

  function duration(start, end) {
    if (!start || !end) { return "–"; }
    var seconds = Math.max((new Date(end) - new Date(start)) / 1000, 0);
    if (seconds < 60) { return seconds.toFixed(1) + " s"; }
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) { return minutes + " min " + Math.floor(seconds % 60) + " s"; }
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function statusClass(status) { return STATUS_CLASSES[status] || "muted"; }

  // Where an API error's `attr` (destination__config__path) is shown: [errors box, prefix].
  function errorBoxFor(root, attr) {
    if (!attr) { return [null, ""]; }
    var parts = String(attr).split("__");
    var key = parts[0], prefix = "";
    if (parts[0] === "destination" && parts[1] === "config" && parts.length > 2) {
      key = "config." + parts[2];
      prefix = parts.slice(3).join(".");
    } else if (parts[0] === "destination") {
      key = "destination";
      prefix = parts.slice(1).join(".");
    } else {
      prefix = parts.slice(1).join(".");
    }
    var box = root.querySelector('[data-errors-for="' + key + '"]');
    return [box, prefix ? prefix + ": " : ""];
  }

  function showError(box, message, marker) {
    if (!box) { return; }
    var p = el("p", { text: message });
    if (marker) { p.setAttribute("data-from", marker); }
    box.appendChild(p);
    var field = box.closest(".field");
    if (field) {
      field.classList.add("has-error");
      var input = field.querySelector("input:not([type=checkbox]), select, textarea");
      if (input) { input.setAttribute("aria-invalid", "true"); }
    }
  }

  function clearErrors(root, marker) {
    root.querySelectorAll(marker ? 'p[data-from="' + marker + '"]' : "[data-errors-for] p").forEach(function (p) {
      var field = p.closest(".field");
      p.remove();
      if (field && !field.querySelector("[data-errors-for] p")) {
        field.classList.remove("has-error");
        field.querySelectorAll("[aria-invalid]").forEach(function (input) { input.removeAttribute("aria-invalid"); });
      }
    });
  }

  // ---- pause switches (list and export pages) ------------------------------------------------

  function setSwitch(button, active) {
    button.setAttribute("aria-checked", active ? "true" : "false");
    var text = button.querySelector(".switch-text");
    if (text) { text.textContent = active ? "Active" : "Paused"; }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest('button[role="switch"][data-pause-url]');
    if (!button || button.getAttribute("aria-busy") === "true") { return; }
    var active = button.getAttribute("aria-checked") === "true";
    button.setAttribute("aria-busy", "true");
    var request = active ? api("POST", button.dataset.pauseUrl) : api("POST", button.dataset.unpauseUrl, {});
    request.then(function (result) {
      button.removeAttribute("aria-busy");
      if (result.ok) {
        setSwitch(button, !active);
        toast(active ? "Paused: no scheduled runs until it is unpaused." : "Unpaused: the schedule runs again.");
      } else {
        toast(errorText(result), true);
      }
    });
  });

  // ---- create / edit form --------------------------------------------------------------------

  function blankValue(input) {
    var d = input.dataset, kind = d.kind;
    if (["text", "email", "url", "textarea"].indexOf(kind) >= 0 && d.blank) { return ""; }
    if (d.nullable) { return null; }
    if (kind === "list") { return []; }
    if (!d.required && d["default"]) { return JSON.parse(d["default"]); }
    if (!d.required) { return undefined; }
    return "";
  }

  // The destination config the form describes; the same rules as the server's parse_config.
  function collectConfig(form) {
    var config = {}, problems = {};
    form.querySelectorAll("[data-config-key]").forEach(function (input) {
      var key = input.dataset.configKey, kind = input.dataset.kind, raw = input.value;
      if (kind === "checkbox") { config[key] = input.checked; return; }
      if (kind === "secret") { if (raw !== "") { config[key] = raw; } return; }
      if (kind !== "textarea") { raw = raw.trim(); }
      if (raw === "") {
        var blank = blankValue(input);
        if (blank !== undefined) { config[key] = blank; }
        return;
      }
      if (kind === "json") {
        try { config[key] = JSON.parse(raw); } catch (e) { problems[key] = "Enter valid JSON (" + e.message + ")."; }
      } else if (kind === "list") {
        config[key] = raw.split(/[,\n]/).map(function (s) { return s.trim(); }).filter(Boolean);
      } else if (kind === "number" && /^-?\d+$/.test(raw)) {
        config[key] = Number(raw);
      } else {
        config[key] = raw;
      }
    });
    return { config: config, problems: problems };
  }

  function setStep(step, label, css, message) {
    var status = step.querySelector("[data-step-status]");
    status.textContent = label;
    status.className = "step-status status-" + css;
    step.querySelector("[data-step-message]").textContent = message || "";
  }

  function initExportForm(form) {
    var interval = form.querySelector("#f-interval");
    function syncOffsets() {
      form.querySelectorAll("[data-intervals]").forEach(function (field) {
        var show = field.dataset.intervals.split(" ").indexOf(interval.value) >= 0;
        field.hidden = !show;
        field.querySelectorAll("input, select").forEach(function (input) { input.disabled = !show; });
      });
    }
    if (interval) { interval.addEventListener("change", syncOffsets); syncOffsets(); }

    var runButton = document.getElementById("run-tests");
    if (runButton) {
      runButton.addEventListener("click", function () { runTests(form, runButton); });
    }

    var deleteButton = document.getElementById("delete-export");
    if (deleteButton) {
      deleteButton.addEventListener("click", function () {
        if (!window.confirm("Delete the batch export “" + deleteButton.dataset.name + "”? Its schedule stops; files already exported stay.")) { return; }
        api("DELETE", deleteButton.dataset.url).then(function (result) {
          if (result.ok) { window.location.assign(deleteButton.dataset.next); } else { toast(errorText(result), true); }
        });
      });
    }
  }

  function runTests(form, button) {
    if (button.getAttribute("aria-busy") === "true") { return; }
    var summary = document.getElementById("tests-summary");
    clearErrors(form, "test");
    var collected = collectConfig(form);
    var steps = Array.prototype.slice.call(document.querySelectorAll("#test-steps .step"));
    steps.forEach(function (step) { setStep(step, "Not run", "muted", ""); });
    var bad = Object.keys(collected.problems);
    if (bad.length) {
      bad.forEach(function (key) {
        showError(form.querySelector('[data-errors-for="config.' + key + '"]'), collected.problems[key], "test");
      });
      summary.textContent = "Fix the marked fields first.";
      return;
    }
    var editing = form.dataset.editing === "1";
    var destination = editing ? { config: collected.config } : { type: form.dataset.destinationType, config: collected.config };
    button.setAttribute("aria-busy", "true");
    summary.textContent = "Testing…";
    var failed = false;
    var chain = Promise.resolve();
    steps.forEach(function (step, index) {
      chain = chain.then(function () {
        if (failed) { setStep(step, "Skipped", "muted", "Skipped: an earlier check failed."); return null; }
        setStep(step, "Running…", "active", "");
        return api("POST", form.dataset.testUrl, { step: index, destination: destination }).then(function (result) {
          if (!result.ok) {
            failed = true;
            var message = errorText(result);
            setStep(step, "Failed", "bad", message);
            var target = errorBoxFor(form, result.data && result.data.attr);
            showError(target[0], target[1] + message, "test");
            return;
          }
          var outcome = result.data.result || {};
          if (outcome.status === "Passed") {
            setStep(step, "Passed", "ok", "");
          } else {
            failed = true;
            setStep(step, "Failed", "bad", outcome.message || "");
          }
        });
      });
    });
    chain.then(function () {
      button.removeAttribute("aria-busy");
      summary.textContent = failed ? "The destination test failed." : "Every check passed.";
    });
  }

  // ---- export page: runs, backfills, live updates ---------------------------------------------

  function pageData() {
    var node = document.getElementById("page-data");
    return node ? JSON.parse(node.textContent) : null;
  }

  // Which execution of its interval each listed run is (1 for the first): a retried or re-backfilled
  // interval has a row per execution. Counted among the listed runs, as the server counts them.
  function attempts(runs) {
    var seen = {}, numbered = {};
    runs.slice().sort(function (a, b) { return a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0; })
      .forEach(function (run) {
        var key = run.data_interval_start + "|" + run.data_interval_end;
        seen[key] = (seen[key] || 0) + 1;
        numbered[run.id] = seen[key];
      });
    return numbered;
  }

  function runRow(run, data, attempt) {
    var actions = [el("a", { href: data.runUrl.replace("RUN_ID", run.id), "aria-label": "Logs of the run " + intervalText(run.data_interval_start, run.data_interval_end), text: "Logs" })];
    if (ACTIVE.indexOf(run.status) >= 0) {
      actions.push(" ", el("button", { type: "button", className: "small secondary", "data-action": "cancel-run", "data-run-id": run.id, text: "Cancel" }));
    } else if (run.data_interval_start) {
      actions.push(" ", el("button", { type: "button", className: "small secondary", "data-action": "retry-run", "data-run-id": run.id, text: "Retry" }));
    }
    var status = [el("span", { className: "badge status-" + statusClass(run.status), text: run.status })];
    if (run.backfill) { status.push(" ", el("span", { className: "tag small", title: "Part of a backfill", text: "backfill" })); }
    if (attempt > 1) { status.push(" ", el("span", { className: "tag small", title: "This interval ran before: each execution is a row of its own", text: "attempt " + attempt })); }
    var error = run.latest_error ? el("span", { className: "error-text", text: run.latest_error }) : el("span", { className: "muted", text: "–" });
    return el("tr", { "data-run-id": run.id, "data-status": run.status }, [
      el("td", { "data-label": "Status" }, status),
      el("td", { "data-label": "Interval (UTC)", text: intervalText(run.data_interval_start, run.data_interval_end) }),
      el("td", { "data-label": "Rows", className: "num", text: rows(run.records_completed) }),
      el("td", { "data-label": "Bytes", className: "num", text: filesize(run.bytes_exported) }),
      el("td", { "data-label": "Duration", className: "num", text: duration(run.created_at, run.finished_at) }),
      el("td", { "data-label": "Error", className: "error-cell" }, [error]),
      el("td", { "data-label": "Actions", className: "row-actions" }, actions)
    ]);
  }

  // A backfill's total_records_count: the source's estimate while it runs, what it exported once ended.
  function backfillRecords(total, active) {
    if (total === null || total === undefined) { return active ? "records: counting…" : "records: unknown"; }
    return active ? "about " + rows(total) + " records to export" : rows(total) + " records exported";
  }

  function backfillItem(backfill) {
    var progress = backfill.progress;
    var percent = progress ? Math.round((progress.progress || 0) * 100) : 0;
    var range = when(backfill.start_at) + " – " + when(backfill.end_at);
    var head = [el("span", { className: "badge status-" + statusClass(backfill.status), text: backfill.status }), " ", el("span", { text: range + " UTC" })];
    if (ACTIVE.indexOf(backfill.status) >= 0) {
      head.push(" ", el("button", { type: "button", className: "small secondary", "data-action": "cancel-backfill", "data-backfill-id": backfill.id, text: "Cancel" }));
    }
    var bar = el("progress", { max: "100", value: String(percent), "aria-label": "Progress of the backfill " + range });
    var active = ACTIVE.indexOf(backfill.status) >= 0;
    var text = progress ? progress.finished_runs + " / " + progress.total_runs + " runs · " + percent + "%"
      : active ? "counting runs…" : "ended " + backfill.status.toLowerCase();
    var facts = backfillRecords(backfill.total_records_count, active);
    if (backfill.adjusted_start_at) { facts += " · from the earliest data, " + when(backfill.adjusted_start_at) + " UTC"; }
    return el("li", { className: "backfill", "data-backfill-id": backfill.id, "data-status": backfill.status }, [
      el("div", { className: "backfill-head" }, head),
      el("div", { className: "progress-row" }, [bar, el("span", { className: "progress-text", text: text })]),
      el("p", { className: "backfill-facts muted", text: facts })
    ]);
  }

  // Re-render a container, keeping keyboard focus on the "same" control when it still exists.
  function replaceChildren(container, nodes) {
    var focused = document.activeElement;
    var key = null;
    if (focused && container.contains(focused)) {
      key = focused.getAttribute("data-action") + "|" + (focused.dataset.runId || focused.dataset.backfillId || focused.getAttribute("href"));
    }
    container.textContent = "";
    nodes.forEach(function (node) { container.appendChild(node); });
    if (key) {
      var again = Array.prototype.find.call(container.querySelectorAll("button, a"), function (node) {
        return node.getAttribute("data-action") + "|" + (node.dataset.runId || node.dataset.backfillId || node.getAttribute("href")) === key;
      });
      if (again) { again.focus(); }
    }
  }

  // Swap parts of the page for their fresh server rendering (charts, log results, a run's card).
  function refreshFromServer(ids) {
    return fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ids.forEach(function (id) {
          var now = document.getElementById(id), next = fresh.getElementById(id);
          if (now && next) { now.replaceWith(document.importNode(next, true)); }
        });
      }, function () { /* the next poll tries again */ });
  }

  function initExportPage(data) {
    var base = data.apiBase + data.exportId + "/";
    var runsBody = document.getElementById("runs-body");
    var backfillList = document.getElementById("backfill-list");
    var liveStatus = document.getElementById("live-status");
    var timer = null, busy = false;

    function refresh() {
      return Promise.all([
        // Every interval, as the server renders them (the API's default window is the last 7 days).
        api("GET", base + "runs/?ordering=-data_interval_start&start=" + encodeURIComponent(RUNS_SINCE)),
        api("GET", base + "backfills/")
      ]).then(function (answers) {
        var runs = answers[0], backfills = answers[1], active = false;
        if (runs.ok) {
          var results = runs.data.results.slice(0, data.runsLimit || 25);
          var numbered = attempts(results);
          replaceChildren(runsBody, results.map(function (run) { return runRow(run, data, numbered[run.id]); }));
          document.getElementById("runs-table").hidden = results.length === 0;
          document.getElementById("runs-empty").hidden = results.length > 0;
          active = active || results.some(function (run) { return ACTIVE.indexOf(run.status) >= 0; });
        }
        if (backfills.ok) {
          var items = backfills.data.results.slice(0, 20);
          replaceChildren(backfillList, items.length ? items.map(backfillItem) : [el("li", { className: "muted empty-note", text: "No backfills yet." })]);
          active = active || items.some(function (b) { return ACTIVE.indexOf(b.status) >= 0; });
        }
        if (!runs.ok || !backfills.ok) { active = true; }  // keep trying
        return active;
      });
    }

    function tick() {
      if (busy) { return; }
      busy = true;
      refresh().then(function (active) {
        busy = false;
        if (!active) { stop(); refreshFromServer(["charts", "log-results"]); }
      }, function () { busy = false; });
    }

    function start() {
      if (timer) { return; }
      liveStatus.textContent = "Updating every 2 s…";
      timer = setInterval(tick, 2000);
    }

    function stop() {
      clearInterval(timer);
      timer = null;
      liveStatus.textContent = "Up to date.";
    }

    function act(result, message) {
      if (result.ok) {
        toast(message);
        tick();
        start();
      } else {
        toast(errorText(result), true);
      }
    }

    document.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-action]");
      if (!button) { return; }
      var action = button.dataset.action;
      if (action === "retry-run") {
        api("POST", base + "runs/" + button.dataset.runId + "/retry/").then(function (r) { act(r, "Retrying the run's interval as a backfill."); });
      } else if (action === "cancel-run") {
        api("POST", base + "runs/" + button.dataset.runId + "/cancel/").then(function (r) { act(r, "Run cancelled."); });
      } else if (action === "cancel-backfill") {
        api("POST", base + "backfills/" + button.dataset.backfillId + "/cancel/").then(function (r) { act(r, "Backfill cancelled."); });
      }
    });

    var form = document.getElementById("backfill-form");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      clearErrors(form);
      var body = {};
      ["start_at", "end_at"].forEach(function (name) {
        var value = form.elements[name].value.trim();
        if (value) { body[name] = value; }
      });
      var submit = form.querySelector('button[type="submit"]');
      submit.setAttribute("aria-busy", "true");
      api("POST", base + "backfills/", body).then(function (result) {
        submit.removeAttribute("aria-busy");
        if (result.ok) {
          act(result, "Backfill started.");
          return;
        }
        var target = errorBoxFor(form, result.data && result.data.attr);
        showError(target[0] || form.querySelector('[data-errors-for="backfill"]'), errorText(result));
      });
    });

    if (data.active) { start(); }
  }

  function initRunPage(data) {
    var base = data.apiBase + data.exportId + "/";
    var status = document.getElementById("action-status");
    var timer = null;

    function poll() {
      api("GET", base + "runs/" + data.runId + "/").then(function (result) {
        if (!result.ok) { return; }
        var badge = document.getElementById("run-status");
        if (badge && badge.textContent !== result.data.status) {
          refreshFromServer(["run-card", "log-results"]);
        }
        if (ACTIVE.indexOf(result.data.status) < 0) { clearInterval(timer); timer = null; }
      });
    }

    function start() { if (!timer) { timer = setInterval(poll, 2000); } }

    document.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-action]");
      if (!button) { return; }
      var url = base + "runs/" + data.runId + (button.dataset.action === "retry-run" ? "/retry/" : "/cancel/");
      api("POST", url).then(function (result) {
        if (!result.ok) { toast(errorText(result), true); return; }
        var message = button.dataset.action === "retry-run" ? "Retry started: the interval runs again as a backfill." : "Run cancelled.";
        toast(message);
        var live = document.getElementById("action-status") || status;
        if (live) { live.textContent = message; }
        start();
        poll();
      });
    });

    if (data.active) { start(); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("export-form");
    if (form) { initExportForm(form); }
    var data = pageData();
    if (data && data.runId) { initRunPage(data); }
    else if (data && data.exportId) { initExportPage(data); }
  });
})();
