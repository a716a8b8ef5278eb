// The machine page's timeline: the current workflow's events, those so
// far and each new one (/ui/workflow/ID/events), until it ends, and then
// the notes of the machine's first boot into its OS, until the server
// says "closed".
"use strict";

(function () {
  const live = document.getElementById("live");
  const table = document.getElementById("timeline");
  function setLive(state, text) {
    live.dataset.state = state;
    live.textContent = text;
  }
  if (!table) {
    setLive("ended", "no workflow");
    return;
  }
  const body = table.querySelector("tbody");
  const es = new EventSource("/ui/workflow/" + encodeURIComponent(table.dataset.workflow) + "/events");
  es.addEventListener("open", function () {
    body.replaceChildren(); // each connection replays every event
    setLive("live", "live");
  });
  // The action logs: the API stores lines, it does not stream them, so
  // the page asks again after each of the workflow's events (once per
  // burst) and at its end.
  const logs = document.getElementById("logs");
  const logsError = document.getElementById("logs-error");
  let logsTimer = null;
  function showLogs(list) {
    if (list.length === 0) {
      return;
    }
    const out = [];
    for (const a of list) {
      const d = document.createElement("details");
      d.open = true;
      d.dataset.action = a.task + "/" + a.action;
      const sum = document.createElement("summary");
      sum.textContent = a.task + "/" + a.action + " · " + a.lines.length + " lines" + (a.omitted ? " (" + a.omitted + " earlier ones not shown)" : "");
      const pre = document.createElement("pre");
      // Text, never markup: the output is the machine's.
      pre.textContent = a.lines.map((l) => l.time + " " + l.stream + ": " + l.text).join("\n");
      d.append(sum, pre);
      out.push(d);
    }
    logs.replaceChildren(...out);
  }
  function loadLogs() {
    logsTimer = null;
    fetch("/ui/workflow/" + encodeURIComponent(logs.dataset.workflow) + "/logs", { credentials: "same-origin" })
      .then((res) => (res.ok ? res.json() : res.text().then((t) => Promise.reject(new Error(t)))))
      .then(function (list) {
        logsError.hidden = true;
        showLogs(list);
      })
      .catch(function (err) {
        logsError.textContent = "cannot show the logs: " + err.message;
        logsError.hidden = false;
      });
  }
  function refreshLogs() {
    if (logsTimer === null) {
      logsTimer = setTimeout(loadLogs, 300);
    }
  }
  es.addEventListener("ev", function (e) {
    refreshLogs();
    const ev = JSON.parse(e.data);
    const tr = document.createElement("tr");
    tr.dataset.state = ev.state;
    tr.dataset.action = ev.task + "/" + ev.action;
    for (const [cls, text] of [
      ["time", ev.time.replace("T", " ").replace("Z", "")],
      ["task", ev.task],
      ["action", ev.action],
      ["state", ""],
      ["seconds", ev.state === "RUNNING" || ev.task === "boot" ? "" : ev.seconds + " s"],
      ["message", ev.message || ""],
    ]) {
      const td = document.createElement("td");
      td.className = cls;
      td.textContent = text;
      if (cls === "state") {
        const badge = document.createElement("span");
        // A boot note (herd-boots', herd-metadata's) is no action: it has
        // no state of its own.
        const note = ev.task === "boot" && ev.action === "boot";
        badge.className = note ? "badge note" : "badge state-" + ev.state;
        badge.textContent = note ? "note" : ev.state.toLowerCase();
        td.appendChild(badge);
      }
      tr.appendChild(td);
    }
    body.appendChild(tr);
  });
  function end(state, text) {
    es.close();
    setLive(state, text);
  }
  es.addEventListener("end", function (e) {
    const state = JSON.parse(e.data).state;
    const badge = document.querySelector("#workflows tr.current .badge");
    if (state && badge) {
      badge.className = "badge state-" + state;
      badge.textContent = state;
    }
    // The stream stays open for the notes after the end.
    setLive("ended", "workflow ended · following the machine's first boot");
    refreshLogs();
  });
  es.addEventListener("closed", () => end("ended", "workflow ended"));
  es.addEventListener("fail", (e) => end("reconnecting", JSON.parse(e.data).message));
  es.addEventListener("error", function () {
    if (es.readyState === EventSource.CLOSED) {
      window.location.assign("/ui/login");
      return;
    }
    setLive("reconnecting", "reconnecting…");
  });
})();
