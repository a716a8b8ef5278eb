// The fleet page: one row per machine, kept current by the server's
// event stream (/ui/events). Rows are built with textContent only: every
// value comes from hardware records, which anyone who can push one
// controls.
"use strict";

(function () {
  const body = document.querySelector("#fleet tbody");
  const filter = document.getElementById("filter");
  const stateFilter = document.getElementById("state");
  const count = document.getElementById("count");
  const live = document.getElementById("live");
  const empty = document.getElementById("empty");

  const rows = new Map(); // id -> {data, tr}
  let syncing = true; // a snapshot is arriving
  let stale = new Set(); // ids not yet seen in the snapshot arriving

  function cell(tr, cls, text) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  // Rows go in hostname order, numbers by value (node2 before node10).
  const collator = new Intl.Collator(undefined, { numeric: true });
  function sortKey(d) {
    return (d.hostname || "\uffff") + " " + d.id;
  }
  function before(a, b) {
    return collator.compare(sortKey(a), sortKey(b)) < 0;
  }

  function build(d) {
    const tr = document.createElement("tr");
    tr.dataset.id = d.id;
    const host = cell(tr, "hostname", "");
    const link = document.createElement("a");
    link.href = "/ui/machine/" + encodeURIComponent(d.id);
    link.textContent = d.hostname || "—";
    link.title = d.id;
    host.appendChild(link);
    cell(tr, "mac", d.macs.join(" "));
    cell(tr, "ip", d.ips.join(" "));
    cell(tr, "netboot netboot-" + d.netboot, d.netboot);
    cell(tr, "bmc", d.bmc || "");
    const wf = d.workflow;
    const state = wf ? wf.state : "NONE";
    tr.dataset.state = state;
    const st = cell(tr, "state", "");
    const badge = document.createElement("span");
    badge.className = "badge state-" + state;
    badge.textContent = wf ? wf.state.toLowerCase() : "no workflow";
    st.appendChild(badge);
    if (wf && wf.action) {
      const act = document.createElement("span");
      act.className = "action";
      act.textContent = wf.action;
      st.appendChild(act);
    }
    const pr = cell(tr, "progress", "");
    tr.dataset.progress = wf && wf.total > 0 ? wf.done + "/" + wf.total : "";
    if (wf && wf.total > 0) {
      const bar = document.createElement("span");
      bar.className = "bar state-" + state;
      const fill = document.createElement("span");
      fill.style.width = Math.round((100 * wf.done) / wf.total) + "%";
      bar.appendChild(fill);
      const txt = document.createElement("span");
      txt.className = "count";
      txt.textContent = wf.done + "/" + wf.total;
      pr.append(bar, txt);
    }
    tr._search = [d.hostname, d.id, d.bmc, wf && wf.id, wf && wf.action]
      .concat(d.macs, d.ips).filter(Boolean).join(" ").toLowerCase();
    return tr;
  }

  function matches(tr) {
    const q = filter.value.trim().toLowerCase();
    const s = stateFilter.value;
    return (!s || tr.dataset.state === s) && (!q || tr._search.includes(q));
  }

  // showCount runs at most once a frame: it walks every row, and a burst
  // of events must not walk them once each.
  let countQueued = false;
  function showCount() {
    if (countQueued) return;
    countQueued = true;
    requestAnimationFrame(countNow);
  }
  function countNow() {
    countQueued = false;
    let shown = 0;
    for (const r of rows.values()) if (!r.tr.hidden) shown++;
    count.textContent = shown === rows.size ? rows.size + " machines" : shown + " of " + rows.size + " machines";
    empty.hidden = rows.size !== 0;
  }

  function applyFilter() {
    for (const r of rows.values()) r.tr.hidden = !matches(r.tr);
    showCount();
  }

  // insert puts tr among the rows in hostname order.
  function insert(tr, d) {
    for (const other of body.children) {
      if (before(d, rows.get(other.dataset.id).data)) {
        body.insertBefore(tr, other);
        return;
      }
    }
    body.appendChild(tr);
  }

  function upsert(d) {
    stale.delete(d.id);
    const tr = build(d);
    tr.hidden = !matches(tr);
    const old = rows.get(d.id);
    rows.set(d.id, { data: d, tr: tr });
    if (syncing && !old) return; // placed all at once when synced
    if (old && old.tr.parentNode && sortKey(old.data) === sortKey(d)) {
      old.tr.replaceWith(tr);
    } else {
      if (old) old.tr.remove();
      insert(tr, d);
    }
  }

  function remove(id) {
    const r = rows.get(id);
    if (!r) return;
    r.tr.remove();
    rows.delete(id);
  }

  function synced() {
    for (const id of stale) remove(id);
    stale = new Set();
    const all = Array.from(rows.values()).sort((a, b) => collator.compare(sortKey(a.data), sortKey(b.data)));
    const frag = document.createDocumentFragment();
    for (const r of all) frag.appendChild(r.tr);
    body.replaceChildren(frag);
    syncing = false;
    setLive("live", "live");
    showCount();
  }

  function setLive(state, text) {
    live.dataset.state = state;
    live.textContent = text;
  }

  filter.addEventListener("input", applyFilter);
  stateFilter.addEventListener("change", applyFilter);

  const es = new EventSource("/ui/events");
  es.addEventListener("open", function () {
    // Each connection starts with the whole fleet again.
    syncing = true;
    stale = new Set(rows.keys());
  });
  es.addEventListener("row", (e) => {
    upsert(JSON.parse(e.data));
    if (!syncing) showCount();
  });
  es.addEventListener("gone", (e) => {
    remove(JSON.parse(e.data).id);
    showCount();
  });
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
