/* The shardmigrate fleet page: plain JavaScript, no dependency, served by the plugin behind Airflow's login.
 * It reads the plugin's JSON endpoints (which read only Airflow's metadata database) and never builds more
 * than one page of the shard matrix at a time. Every value from the server is inserted as text, never HTML. */
(function () {
  "use strict";

  var LIVE_REFRESH_MS = 5000;
  var STATUS_ORDER = ["applied", "baselined", "running", "rolled_back", "failed", "unreadable", "not_applied"];
  var LETTER_ORDER = ["A", "B", "R", "X", "F", "?", "-"];
  var IDLE_REFRESH_MS = 30000;
  var state = {
    fleet: new URLSearchParams(window.location.search).get("fleet") || "",
    offset: 0, limit: 50, query: "", migration: "", status: "", active: "", generatedAt: null
  };
  var timer = null;
  var lastSummary = null;

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs) {
    var node = document.createElement(tag);
    var key;
    for (key in attrs || {}) {
      if (!Object.prototype.hasOwnProperty.call(attrs, key) || attrs[key] === undefined || attrs[key] === null) continue;
      if (key === "text") node.textContent = String(attrs[key]);
      else if (key === "className") node.className = attrs[key];
      else node.setAttribute(key, attrs[key]);
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function ordered(keys, order) {
    return keys.slice().sort(function (a, b) {
      var i = order.indexOf(a), j = order.indexOf(b);
      return (i < 0 ? order.length : i) - (j < 0 ? order.length : j) || (a < b ? -1 : a > b ? 1 : 0);
    });
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  function link(href, text) { return el("a", { href: href, target: "_top", text: text }); }

  function when(iso) {
    if (!iso) return "";
    var date = new Date(iso);
    return isNaN(date.getTime()) ? String(iso) : date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (response) {
      if (response.ok) return response.json();
      return response.json().catch(function () { return {}; }).then(function (body) {
        var error = new Error(response.status + " " + (body.detail || response.statusText));
        error.status = response.status;
        throw error;
      });
    });
  }

  function showError(message) {
    var box = $("error");
    box.hidden = !message;
    box.textContent = message || "";
  }

  function badge(text, kind) { return el("span", { className: "badge " + (kind || text), text: text }); }

  function bar(segments, titleFor) {
    var node = el("div", { className: "bar", role: "img" });
    var labels = [];
    segments.forEach(function (segment) {
      var label = titleFor(segment);
      labels.push(label);
      node.appendChild(el("span", { className: "seg-" + segment.kind, style: "width:" + segment.percent + "%", title: label }));
    });
    node.setAttribute("aria-label", labels.join(", "));
    return node;
  }

  // -- summary: status line, migrations and their runs, drift ---------------------------------------------

  function renderStatusLine(status) {
    var line = $("status-line");
    if (!status.published) {
      line.textContent = status.message;
      return;
    }
    var shards = status.shards;
    line.textContent = "Fleet status generated " + when(status.generated_at) + " by " + status.dag_id + " (run " +
      status.run_id + "): " + shards.total + " shard(s), " + shards.active + " active; " + shards.with_error +
      " with an error, " + shards.unreadable + " unreadable" + completeness(status);
  }

  function completeness(status) {
    if (status.complete) return " — every active shard holds every migration.";
    var shards = status.shards;
    var why = [];
    if (shards.lacking) why.push(shards.lacking + " active shard(s) lack a migration");
    if (shards.unreadable) why.push(shards.unreadable + " shard(s) could not be read");
    return " — INCOMPLETE" + (why.length ? ": " + why.join(", ") : "") + ".";
  }

  function fleetCell(status, migrationId) {
    if (!status.published) return el("span", { className: "muted", text: "no fleet status yet" });
    var counts = status.counts[migrationId];
    if (!counts) return el("span", { className: "muted", text: "not in the fleet status" });
    var total = 0;
    var name;
    for (name in counts) total += counts[name];
    var segments = [];
    var parts = [];
    ordered(Object.keys(counts), STATUS_ORDER).forEach(function (key) {
      if (!counts[key]) return;
      segments.push({ kind: key, count: counts[key], percent: total ? (100 * counts[key]) / total : 0 });
      parts.push(key + " " + counts[key]);
    });
    return el("div", null,
      bar(segments, function (s) { return s.kind + ": " + s.count; }),
      el("div", { className: "counts", text: parts.join(" · ") }));
  }

  function runCell(dag) {
    if (!dag) return el("span", { className: "muted", text: "no DAG" });
    var run = dag.latest_run;
    if (!run) return el("span", { className: "muted" }, "never run · ", link(dag.url, "open DAG"));
    var cell = el("div", null, badge(run.state), " ", link(run.url, run.run_id),
      el("div", { className: "counts", text: when(run.run_after) }));
    if (run.awaiting_approval) {
      cell.appendChild(el("div", null, badge("awaiting approval", "approval"), " ",
        link(run.awaiting_approval.url, "answer the canary approval")));
    }
    return cell;
  }

  function resultCell(report) {
    var counts = report.outcome_counts || {};
    var parts = ordered(Object.keys(counts), ["succeeded", "already_applied", "would_apply", "rolled_back",
      "failed", "pending", "not_applied", "not_selected", "would_roll_back"]).map(function (key) {
      return counts[key] + " " + key.replace(/_/g, " ");
    });
    var cell = el("div", { className: "result" }, el("div", { text: parts.join(" · ") || "no shard" }));
    var reason = report.refused ? "refused: [" + report.refused.code + "] " + report.refused.reason : report.halted_reason;
    if (reason) cell.appendChild(el("div", { className: "reason", text: reason }));
    return cell;
  }

  function progressCell(dag) {
    var run = dag && dag.latest_run;
    if (run && run.report) return resultCell(run.report);
    if (!run || !run.progress) return el("span", { className: "muted", text: run ? "no report" : "" });
    var p = run.progress;
    var phase = run.awaiting_approval ? "waiting for the canary approval" : p.phase;
    return el("div", null,
      bar(p.bar, function (s) { return s.kind.replace("_", " ") + ": " + s.count; }),
      el("div", { className: "counts", text: phase + " · " + p.completed_shards + "/" + p.total_shards +
        " at the migration, " + p.running_shards + " running, " + p.failed_shards + " failed, " +
        p.rolled_back_shards + " rolled back, " + p.stopped_shards + " pending" }));
  }

  function renderRuns(summary) {
    var body = clear($("runs-body"));
    if (!summary.migrations.length) {
      body.appendChild(el("tr", null, el("td", { colspan: "5", className: "muted",
        text: "No shardmigrate__* DAG is visible to you yet." })));
      return;
    }
    summary.migrations.forEach(function (migration) {
      var rollout = migration.rollout;
      var name = rollout ? link(rollout.url, rollout.display_name) : el("span", { text: migration.migration_id });
      body.appendChild(el("tr", { "data-migration": migration.migration_id },
        el("td", null, name, el("div", { className: "counts", text: migration.migration_id })),
        el("td", null, runCell(rollout)),
        el("td", null, progressCell(rollout)),
        el("td", null, fleetCell(summary.status, migration.migration_id)),
        el("td", null, runCell(migration.rollback))));
    });
  }

  function renderDrift(drift) {
    var body = clear($("drift-body"));
    body.className = "";
    if (!drift.published) {
      body.appendChild(el("p", { className: "notice", text: drift.message }));
      return;
    }
    body.appendChild(el("p", null, badge(drift.status), " ", drift.description));
    body.appendChild(el("p", { className: "counts", text: "baseline " + drift.baseline + ", depth " + drift.depth +
      ", compared " + when(drift.generated_at) + " (run " + drift.run_id + ")" }));
    if (drift.tables.length) {
      var list = el("ul", { className: "tables" });
      drift.tables.forEach(function (table) {
        var critical = drift.critical_drift[table.table] ? " (critical)" : "";
        var more = table.shard_count > table.shards.length ? " and " + (table.shard_count - table.shards.length) + " more" : "";
        list.appendChild(el("li", null, el("strong", { text: table.table + critical }),
          ": " + table.shards.join(", ") + more));
      });
      body.appendChild(el("div", null, el("span", { text: "Drifted tables:" }), list));
      if (drift.more_tables) body.appendChild(el("p", { className: "muted", text: "… and " + drift.more_tables + " more table(s)" }));
    }
    var unreadable = Object.keys(drift.unreadable || {});
    if (unreadable.length) {
      body.appendChild(el("p", { className: "error", text: "Could not read: " + unreadable.map(function (s) {
        return s + " (" + drift.unreadable[s] + ")";
      }).join("; ") }));
    }
  }

  function renderFleets(fleets) {
    // One migrations folder is one fleet; a dags folder with several names each (load_migration_dags(fleet=...)).
    var picker = $("fleet-picker");
    var select = $("f-fleet");
    picker.hidden = fleets.length < 2;
    if (select.options.length === fleets.length) return;
    clear(select);
    fleets.forEach(function (name) { select.appendChild(el("option", { value: name, text: name || "(unnamed)" })); });
    select.value = state.fleet;
  }

  function refreshSummary() {
    return getJSON("fleet/summary?" + new URLSearchParams({ fleet: state.fleet }).toString()).then(function (summary) {
      showError("");
      lastSummary = summary;
      renderFleets(summary.fleets || []);
      renderStatusLine(summary.status);
      renderRuns(summary);
      renderDrift(summary.drift);
      var generated = summary.status.published ? summary.status.run_id + "@" + summary.status.published_at : null;
      if (generated !== state.generatedAt) {
        state.generatedAt = generated;
        setUpFilters(summary.status);
        return refreshMatrix();
      }
      return null;
    }).catch(function (error) {
      showError("Could not load the fleet summary: " + error.message +
        (error.status === 401 ? " — log in to Airflow again." : ""));
    }).then(schedule);
  }

  function schedule() {
    if (timer) clearTimeout(timer);
    var live = lastSummary && lastSummary.migrations.some(function (m) {
      return ["rollout", "rollback"].some(function (kind) {
        var run = m[kind] && m[kind].latest_run;
        return run && (run.state === "running" || run.state === "queued");
      });
    });
    timer = setTimeout(refreshSummary, live ? LIVE_REFRESH_MS : IDLE_REFRESH_MS);
  }

  // -- the matrix, one page at a time ---------------------------------------------------------------------

  function setUpFilters(status) {
    var empty = $("matrix-empty");
    var main = $("matrix-main");
    if (!status.published) {
      empty.hidden = false;
      empty.textContent = status.message;
      main.hidden = true;
      return;
    }
    empty.hidden = true;
    main.hidden = false;
    var migration = clear($("f-migration"));
    migration.appendChild(el("option", { value: "", text: "any" }));
    status.migrations.forEach(function (id) { migration.appendChild(el("option", { value: id, text: id })); });
    migration.value = status.migrations.indexOf(state.migration) >= 0 ? state.migration : "";
    state.migration = migration.value;
    var statusSelect = clear($("f-status"));
    statusSelect.appendChild(el("option", { value: "", text: "any" }));
    var legend = clear($("legend"));
    ordered(Object.keys(status.legend), LETTER_ORDER).forEach(function (letter) {
      statusSelect.appendChild(el("option", { value: letter, text: letter + " — " + status.legend[letter] }));
      legend.appendChild(el("span", null, el("span", { className: "badge " + cellClass(letter), text: letter }),
        " " + status.legend[letter]));
    });
    statusSelect.value = state.status;
  }

  function cellClass(letter) {
    if (letter === "-") return "c-dash";
    if (letter === "?") return "c-Q";
    return "c-" + letter;
  }

  function matrixUrl() {
    var params = new URLSearchParams({ offset: String(state.offset), limit: String(state.limit), fleet: state.fleet });
    if (state.query) params.set("q", state.query);
    if (state.migration) params.set("migration", state.migration);
    if (state.status) params.set("status", state.status);
    if (state.active) params.set("active", state.active);
    return "fleet/matrix?" + params.toString();
  }

  function refreshMatrix() {
    if (!lastSummary || !lastSummary.status.published) return Promise.resolve();
    return getJSON(matrixUrl()).then(renderMatrix).catch(function (error) {
      showError("Could not load the shard matrix: " + error.message);
    });
  }

  function renderMatrix(page) {
    var table = $("matrix-table");
    var head = clear(table.tHead);
    var headRow = el("tr", null, el("th", { text: "Shard" }), el("th", { text: "Engine" }));
    page.migrations.forEach(function (id) { headRow.appendChild(el("th", { className: "mig", title: id, text: id })); });
    headRow.appendChild(el("th", { text: "Error" }));
    head.appendChild(headRow);
    var body = clear(table.tBodies[0]);
    page.rows.forEach(function (row) {
      var tr = el("tr", { "data-shard": row.id },
        el("td", null, el("span", { text: row.id }), row.active ? null : el("span", { className: "muted", text: " (inactive)" })),
        el("td", { text: row.engine || "" }));
      for (var i = 0; i < row.row.length; i++) {
        var letter = row.row.charAt(i);
        var label = page.legend[letter] || letter;
        tr.appendChild(el("td", { className: "cell " + cellClass(letter), title: page.migrations[i] + ": " + label,
          "data-status": label, text: letter }));
      }
      tr.appendChild(el("td", { className: "err" }, row.error ? el("div", { className: "clamp", title: row.error,
        text: row.error }) : null));
      body.appendChild(tr);
    });
    if (!page.rows.length) {
      body.appendChild(el("tr", null, el("td", { colspan: String(page.migrations.length + 3), className: "muted",
        text: "No shard matches these filters." })));
    }
    var first = page.matching ? page.offset + 1 : 0;
    var last = Math.min(page.offset + page.limit, page.matching);
    $("page-info").textContent = "Shards " + first + " to " + last + " of " + page.matching + " matching (" +
      page.total + " in the fleet)";
    $("prev").disabled = page.offset <= 0;
    $("next").disabled = page.offset + page.limit >= page.matching;
  }

  function onFilter() {
    state.query = $("f-query").value.trim();
    state.migration = $("f-migration").value;
    state.status = $("f-status").value;
    state.active = $("f-active").value;
    state.limit = parseInt($("f-limit").value, 10) || 50;
    state.offset = 0;
    refreshMatrix();
  }

  var typing = null;
  $("f-query").addEventListener("input", function () {
    if (typing) clearTimeout(typing);
    typing = setTimeout(onFilter, 250);
  });
  ["f-migration", "f-status", "f-active", "f-limit"].forEach(function (id) { $(id).addEventListener("change", onFilter); });
  $("filters").addEventListener("submit", function (event) { event.preventDefault(); onFilter(); });
  $("f-fleet").addEventListener("change", function () {
    state.fleet = $("f-fleet").value;
    state.offset = 0;
    state.generatedAt = null;  // another fleet's status: set the filters up again
    refreshSummary();
  });
  $("prev").addEventListener("click", function () { state.offset = Math.max(0, state.offset - state.limit); refreshMatrix(); });
  $("next").addEventListener("click", function () { state.offset += state.limit; refreshMatrix(); });

  refreshSummary();
})();
