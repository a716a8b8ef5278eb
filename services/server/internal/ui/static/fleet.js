// The fleet page: one row per machine, kept current by the server's
// event stream (/ui/events). Only the rows in view are in the page (a
// fleet of 10,000 would take the browser seconds to lay out and to
// re-lay out on every change); the rest are data. Rows are built with
// textContent only: every value comes from hardware records, which
// anyone who can push one controls.
"use strict";

(function () {
  const table = document.getElementById("fleet");
  const body = table.querySelector("tbody");
  const filter = document.getElementById("filter");
  const stateFilter = document.getElementById("state");
  const count = document.getElementById("count");
  const live = document.getElementById("live");
  const empty = document.getElementById("empty");

  const rowHeight = 32; // px, as style.css sets #fleet rows
  const overscan = 10; // rows built beyond each edge of the view

  const rows = new Map(); // id -> row data (with .search, .key)
  const power = new Map(); // id -> power state ("" unknown) of the machines with a BMC
  let order = []; // every id, in hostname order
  let view = []; // the ids that pass the filters, in order
  let syncing = true; // a snapshot is arriving
  let machinesKnown = false; // every machine's row has come (workflows may not yet)
  let stale = new Set(); // ids not yet seen in the snapshot arriving

  // Host names sort by their numbers (node2 before node10).
  const collator = new Intl.Collator(undefined, { numeric: true });
  const compare = (a, b) => collator.compare(rows.get(a).key, rows.get(b).key);

  function prepare(d) {
    const wf = d.workflow;
    d.state = wf ? wf.state : "NONE";
    d.key = (d.hostname || "\uffff") + " " + d.id;
    d.search = [d.hostname, d.id, d.bmc, wf && wf.id, wf && wf.action]
      .concat(d.macs, d.ips).filter(Boolean).join(" ").toLowerCase();
    return d;
  }

  function matches(d) {
    const q = filter.value.trim().toLowerCase();
    const s = stateFilter.value;
    return (!s || d.state === s) && (!q || d.search.includes(q));
  }

  function cell(tr, cls, text) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function build(d) {
    const tr = document.createElement("tr");
    tr.dataset.id = d.id;
    tr.dataset.state = d.state;
    const wf = d.workflow;
    tr.dataset.progress = wf && wf.total > 0 ? wf.done + "/" + wf.total : "";
    const host = cell(tr, "hostname", "");
    const link = document.createElement("a");
    link.href = "/ui/machine/" + encodeURIComponent(d.id);
    link.textContent = d.hostname || "—";
    link.title = d.id;
    host.appendChild(link);
    cell(tr, "mac", d.macs.join(" "));
    cell(tr, "ip", d.ips.join(" "));
    cell(tr, "netboot netboot-" + d.netboot, d.netboot);
    const bmc = cell(tr, "bmc", d.bmc || "");
    const pw = power.has(d.id) ? power.get(d.id) || "unknown" : "-";
    tr.dataset.power = pw;
    if (d.bmc || pw !== "-") {
      const p = document.createElement("span");
      p.className = "power power-" + pw;
      p.textContent = pw;
      bmc.appendChild(p);
    }
    const st = cell(tr, "state", "");
    const badge = document.createElement("span");
    badge.className = "badge state-" + d.state;
    badge.textContent = wf ? wf.state.toLowerCase() : syncing ? "…" : "no workflow";
    st.appendChild(badge);
    if (wf && wf.action) {
      const act = document.createElement("span");
      act.className = "action";
      act.textContent = wf.action;
      st.appendChild(act);
    }
    const pr = cell(tr, "progress", "");
    if (wf && wf.total > 0) {
      const bar = document.createElement("span");
      bar.className = "bar state-" + d.state;
      const fill = document.createElement("span");
      fill.style.width = Math.round((100 * wf.done) / wf.total) + "%";
      bar.appendChild(fill);
      const txt = document.createElement("span");
      txt.className = "count";
      txt.textContent = wf.done + "/" + wf.total;
      pr.append(bar, txt);
    }
    return tr;
  }

  function spacer(height) {
    const tr = document.createElement("tr");
    tr.className = "spacer";
    const td = document.createElement("td");
    td.colSpan = 7;
    td.style.height = height + "px";
    tr.appendChild(td);
    return tr;
  }

  // Work is queued and done once a frame: a burst of events costs one
  // filter pass and one rebuild of the rows in view.
  let resort = false, refilter = false, queued = false;
  function schedule(what) {
    if (what === "sort") resort = true;
    if (what === "sort" || what === "filter") refilter = true;
    if (!queued) {
      queued = true;
      requestAnimationFrame(render);
    }
  }

  function render() {
    queued = false;
    if (!machinesKnown) return;
    if (resort) order.sort(compare);
    if (refilter) view = order.filter((id) => matches(rows.get(id)));
    resort = refilter = false;
    // The rows in view: the table's place on the page and the scroll
    // position say which.
    const top = table.getBoundingClientRect().top + window.scrollY + table.tHead.offsetHeight;
    const first = Math.max(0, Math.floor((window.scrollY - top) / rowHeight) - overscan);
    const last = Math.min(view.length, Math.ceil((window.scrollY + window.innerHeight - top) / rowHeight) + overscan);
    const frag = document.createDocumentFragment();
    if (first > 0) frag.appendChild(spacer(first * rowHeight));
    for (let i = first; i < last; i++) frag.appendChild(build(rows.get(view[i])));
    if (last < view.length) frag.appendChild(spacer((view.length - last) * rowHeight));
    body.replaceChildren(frag);
    count.textContent = (view.length === rows.size ? rows.size + " machines" : view.length + " of " + rows.size + " machines") +
      (syncing ? ", loading workflows…" : "");
    empty.hidden = rows.size !== 0;
  }

  function upsert(d) {
    prepare(d);
    stale.delete(d.id);
    const old = rows.get(d.id);
    rows.set(d.id, d);
    if (!old) {
      order.push(d.id);
      schedule("sort");
    } else if (old.key !== d.key) {
      schedule("sort");
    } else if (matches(old) !== matches(d)) {
      schedule("filter");
    } else {
      schedule("view");
    }
  }

  function remove(id) {
    if (!rows.delete(id)) return;
    order = order.filter((x) => x !== id);
    schedule("filter");
  }

  function machines() {
    if (stale.size > 0) {
      for (const id of stale) rows.delete(id);
      order = order.filter((id) => !stale.has(id));
      stale = new Set();
    }
    machinesKnown = true;
    schedule("sort");
  }

  function synced() {
    syncing = false;
    setLive("live", "live");
    schedule("sort");
  }

  function setLive(state, text) {
    live.dataset.state = state;
    live.textContent = text;
  }

  filter.addEventListener("input", () => schedule("filter"));
  stateFilter.addEventListener("change", () => schedule("filter"));
  window.addEventListener("scroll", () => schedule("view"), { passive: true });
  window.addEventListener("resize", () => schedule("view"));

  // Power states: herd-server polls the BMCs; the page asks for the
  // whole list (one call, not one a machine) now and every 15 s.
  function loadPower() {
    fetch("/ui/power", { credentials: "same-origin" })
      .then((res) => (res.ok ? res.json() : Promise.reject(new Error(res.status))))
      .then(function (states) {
        power.clear();
        for (const [id, st] of Object.entries(states)) power.set(id, st);
        schedule("view");
      })
      .catch(() => {}); // the next round tries again; the rows stay as they were
  }
  loadPower();
  setInterval(loadPower, 15000);

  const es = new EventSource("/ui/events");
  es.addEventListener("open", function () {
    // Each connection starts with the whole fleet again.
    syncing = true;
    stale = new Set(rows.keys());
  });
  es.addEventListener("rows", (e) => JSON.parse(e.data).forEach(upsert));
  es.addEventListener("gone", (e) => remove(JSON.parse(e.data).id));
  es.addEventListener("machines", machines);
  es.addEventListener("synced", synced);
  es.addEventListener("error", function () {
    if (es.readyState === EventSource.CLOSED) {
      // Refused (401: the session ended): log in again.
      window.location.assign("/ui/login");
      return;
    }
    setLive("reconnecting", "reconnecting…");
  });
})();
